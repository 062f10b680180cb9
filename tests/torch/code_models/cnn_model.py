"""A CNN segmenter saved from code: this file rebuilds the network; weights load separately."""

import mlflow

from tests.torch.cnn_models import CnnSegmenter, TinyUNet

mlflow.models.set_model(CnnSegmenter(torch_model=TinyUNet()))
