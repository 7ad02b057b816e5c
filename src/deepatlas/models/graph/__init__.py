"""Graph networks: message passing over a graph's edges (GCN, GraphSAGE, GAT, GIN, MPNN), on deepatlas.nn.graph."""
