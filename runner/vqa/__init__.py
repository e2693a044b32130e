"""Visual question answering on VGG features: VQA's JSON files, image features, GloVe vectors, its accuracy."""
