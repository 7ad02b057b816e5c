"""Language models: the transformer, GPT, BERT, word embeddings (word2vec, GloVe, FastText), ELMo."""
