"""One file per architecture, grouped by family; the catalog imports every module here."""
