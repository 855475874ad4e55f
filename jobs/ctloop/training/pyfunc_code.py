"""The model file MLflow logs as code (models from code): ``log_pyfunc`` passes this file's path to
``mlflow.pyfunc.log_model``, MLflow copies it into the model directory, and loading the model runs it.

It only hands MLflow the wrapper class of the installed ``ctloop`` package, so a logged model is
this source file, the ``.keras`` file and the input kinds: no pickled Python object. Running it is
what sets the model (``mlflow.models.set_model``), so nothing imports it as a module.
"""

import mlflow.models

from ctloop.training.pyfunc import KerasScorer

mlflow.models.set_model(KerasScorer())
