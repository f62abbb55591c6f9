"""The déjà vu attack: background crops, embeddings, exact KNN (DESIGN 2.3-2.4)."""
