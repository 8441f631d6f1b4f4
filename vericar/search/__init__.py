"""From an embedding to an answer: the faiss gallery, density correction, k-NN voting, unknown detection, calibrated confidences, the make/model/type/year taxonomy."""
