"""The CNN segmenter, saved from code: MLflow runs this file to rebuild it, then loads the
trained weights beside it (``torch.load(weights_only=True)``): no pickle anywhere."""

import mlflow
from cnn_segmenter import CnnSegmenter, TinySegNet

mlflow.models.set_model(CnnSegmenter(torch_model=TinySegNet()))
