"""Sequence models: recurrent networks, temporal convolutions, encoder-decoders, recursive networks."""
