"""The molecule data module: atoms and bonds become the right one-hot nodes and edges, the RDKit sets
load with their real targets (TPSA as Daylight computed it, RDKit's Crippen logP, the ChEMBL potency),
the splits are fixed, disjoint and scaffold-clean, and a SMILES RDKit cannot read is refused by line."""
import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from rdkit.Chem import Crippen, rdMolDescriptors  # noqa: E402

from deepatlas.data import molecules  # noqa: E402
from deepatlas.errors import DeepAtlasError  # noqa: E402


def _value(graph, names, group, key="x"):
    """The label of `group` that is set in each row of graph[key]: ["C", "C", "O"] for element in ethanol."""
    cols = [i for i, n in enumerate(names) if n.split("=")[0] == group]
    picked = graph[key][:, cols].argmax(1)
    return [names[cols[int(i)]].split("=", 1)[1] for i in picked]


def _check_edges(graph):
    edges = graph["edge_index"]
    n, e = graph["x"].shape[0], edges.shape[1]
    assert edges.dtype == torch.long and edges.shape == (2, e) and graph["edge_attr"].shape[0] == e
    assert e % 2 == 0 and (edges >= 0).all() and (edges < n).all() and (edges[0] != edges[1]).all()
    pairs = set(map(tuple, edges.T.tolist()))
    assert len(pairs) == e                                   # no duplicate edge
    assert pairs == {(j, i) for i, j in pairs}               # every edge has its reverse
    b = e // 2                                               # edge k and b + k: one bond, same features
    torch.testing.assert_close(edges[:, :b].flip(0), edges[:, b:])
    torch.testing.assert_close(graph["edge_attr"][:b], graph["edge_attr"][b:])


def _check_one_hots(x, groups):
    start = 0
    for group in groups:
        width = len(group.columns)
        block = x[:, start:start + width]
        assert ((block == 0) | (block == 1)).all() and (block.sum(1) == 1).all(), group.name
        start += width
    assert start == x.shape[1]


ATOMS, BONDS = molecules.atom_features(), molecules.bond_features()


def test_benzene_is_six_aromatic_atoms_and_twelve_directed_aromatic_edges():
    (g,) = molecules.featurize(["c1ccccc1"])
    assert g["x"].shape == (6, len(ATOMS)) and g["x"].dtype == torch.float32
    assert g["edge_index"].shape == (2, 12) and g["edge_attr"].shape == (12, len(BONDS))
    _check_edges(g)
    assert _value(g, ATOMS, "aromatic") == ["yes"] * 6 and _value(g, ATOMS, "ring") == ["yes"] * 6
    assert _value(g, ATOMS, "hybridization") == ["sp2"] * 6 and _value(g, ATOMS, "hydrogens") == ["1"] * 6
    assert _value(g, BONDS, "bond", "edge_attr") == ["aromatic"] * 12
    assert _value(g, BONDS, "conjugated", "edge_attr") == ["yes"] * 12
    assert sorted(torch.bincount(g["edge_index"][0]).tolist()) == [2] * 6   # a 6-cycle


def test_ethanol_atoms_and_bonds():
    (g,) = molecules.featurize(["CCO"])
    _check_edges(g)
    assert _value(g, ATOMS, "element") == ["C", "C", "O"]
    assert _value(g, ATOMS, "hydrogens") == ["3", "2", "1"]
    assert _value(g, ATOMS, "degree") == ["1", "2", "1"]
    assert _value(g, ATOMS, "hybridization") == ["sp3"] * 3 and _value(g, ATOMS, "ring") == ["no"] * 3
    assert _value(g, BONDS, "bond", "edge_attr") == ["single"] * 4
    assert g["edge_index"].tolist() == [[0, 1, 1, 2], [1, 2, 0, 1]]


def test_charges_metals_and_a_lone_ion():
    ammonium, acetate, salt, triple = molecules.featurize(["C[N+](C)(C)C", "CC(=O)[O-]", "[Na+].[Cl-]", "C#N"])
    assert _value(ammonium, ATOMS, "charge")[1] == "+1" and _value(ammonium, ATOMS, "degree")[1] == "4"
    assert _value(acetate, ATOMS, "charge") == ["0", "0", "0", "-1"]
    assert _value(salt, ATOMS, "element") == ["other", "Cl"]        # sodium is outside the organic set
    assert salt["edge_index"].shape == (2, 0) and salt["edge_attr"].shape == (0, len(BONDS))
    assert _value(triple, BONDS, "bond", "edge_attr") == ["triple"] * 2
    for g in (ammonium, acetate, salt, triple):
        _check_one_hots(g["x"], molecules.atom_groups())
        _check_one_hots(g["edge_attr"], molecules.bond_groups())


def test_nci_tpsa_set_loads_with_daylight_targets_that_rdkit_agrees_with():
    mols = molecules.load("molecules")
    assert mols is molecules.load("molecules")                      # parsed once per process
    assert 4900 < len(mols.graphs) == len(mols.smiles) == len(mols.ids) == mols.y.shape[0] <= 5000
    assert mols.dropped == 4999 - len(mols.graphs) == 8
    assert mols.y.dtype == torch.float32 and mols.target == "TPSA" and mols.units == "Å²"
    assert "first_5K.smi" in mols.source and "tpsa" in mols.source
    assert mols.atom_features == ATOMS and mols.bond_features == BONDS
    rdkit_tpsa = np.array([rdMolDescriptors.CalcTPSA(m) for m in molecules.parse(mols.smiles)])
    agree = np.abs(rdkit_tpsa - mols.y.numpy()) <= 0.01
    assert agree.mean() > 0.999, f"{(~agree).sum()} of {len(agree)} differ"   # measured: 2 of 4,991 differ
    x = torch.cat([g["x"] for g in mols.graphs])
    edge_attr = torch.cat([g["edge_attr"] for g in mols.graphs])
    _check_one_hots(x, molecules.atom_groups())
    _check_one_hots(edge_attr, molecules.bond_groups())
    for g in mols.graphs[::50]:
        _check_edges(g)
    # the embedded graphs are what featurize makes of the same SMILES
    for i in (0, 1234, len(mols.graphs) - 1):
        (again,) = molecules.featurize([mols.smiles[i]])
        for key in ("x", "edge_index", "edge_attr"):
            torch.testing.assert_close(again[key], mols.graphs[i][key])


def test_scaffold_split_is_fixed_disjoint_complete_and_keeps_scaffolds_apart():
    mols = molecules.load("molecules")
    split = mols.split
    every = np.concatenate([split["train"], split["val"], split["test"]])
    assert len(every) == len(set(every.tolist())) == len(mols.graphs)
    assert [round(len(split[k]) / len(every), 2) for k in ("train", "val", "test")] == [0.8, 0.1, 0.1]
    scaffold = np.array(molecules.scaffolds(molecules.parse(mols.smiles)), dtype=object)
    parts = [set(scaffold[split[k]]) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert "" in parts[0] and "c1ccccc1" in parts[0]                 # the largest groups train
    again = molecules.scaffold_split(list(scaffold))
    assert all(np.array_equal(again[k], split[k]) for k in split)


def test_logp_set_shares_molecules_and_split_with_rdkit_crippen_targets():
    tpsa, logp = molecules.load("molecules-tpsa"), molecules.load("molecules-logp")
    assert logp.smiles == tpsa.smiles and all(np.array_equal(logp.split[k], tpsa.split[k]) for k in tpsa.split)
    assert logp.target == "Crippen logP" and "MolLogP" in logp.source
    mols = molecules.parse(logp.smiles[:20])
    np.testing.assert_allclose(logp.y[:20].numpy(), [Crippen.MolLogP(m) for m in mols], atol=1e-4)


def test_chembl_set_is_the_measured_potencies_with_a_seeded_random_split():
    mols = molecules.load("molecules-chembl")
    assert len(mols.graphs) == 1017 and mols.dropped == 0 and mols.split_kind == "random"
    assert mols.target == "pIC50" and 4.0 < mols.y.min() and mols.y.max() < 10.0
    assert mols.ids[0] == "1520012" and mols.y[0].item() == pytest.approx(5.48)   # the first rows of the files
    assert {k: len(v) for k, v in mols.split.items()} == {"train": 814, "val": 102, "test": 101}
    every = np.concatenate(list(mols.split.values()))
    assert sorted(every.tolist()) == list(range(1017))
    assert all(np.array_equal(mols.split[k], molecules.random_split(1017)[k]) for k in mols.split)


def test_fingerprint_forest_beats_the_training_mean_on_chembl():
    result = molecules.morgan_baseline(molecules.load("molecules-chembl"), n_estimators=20)
    assert result["n_train"] == 814 and result["n_test"] == 101
    assert result["mae"] < 0.7 * result["train_mean_mae"] and result["rmse"] < result["train_mean_rmse"]
    assert molecules.morgan_fingerprints(["CCO", "c1ccccc1"]).shape == (2, 2048)


def test_unreadable_smiles_are_refused_naming_their_line(tmp_path):
    with pytest.raises(DeepAtlasError, match=r"^SMILES, line 2: 'C1CC' is not a SMILES RDKit can read$"):
        molecules.featurize(["CCO", "C1CC"])
    with pytest.raises(DeepAtlasError, match="line 1: '' has no atom"):
        molecules.featurize([""])
    path = tmp_path / "mine.smi"
    path.write_text("# my molecules\nCCO ethanol\n\nc1ccccc1 benzene\nC(C)(C)(C)(C)C five\n")
    smiles, names, lines = molecules.read_smiles(path)
    assert smiles[:2] == ["CCO", "c1ccccc1"] and names[:2] == ["ethanol", "benzene"] and lines == [2, 4, 5]
    with pytest.raises(DeepAtlasError, match=r"mine\.smi, line 5: 'C\(C\)\(C\)\(C\)\(C\)C' is not"):
        molecules.featurize(smiles, where=str(path), lines=lines)
    (tmp_path / "empty.smi").write_text("\n# nothing\n")
    with pytest.raises(DeepAtlasError, match="no SMILES"):
        molecules.read_smiles(tmp_path / "empty.smi")
    with pytest.raises(DeepAtlasError, match="unknown molecule set 'molecules-qm9'"):
        molecules.load("molecules-qm9")
