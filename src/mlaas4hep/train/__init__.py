"""Training, evaluation, ONNX export and the artifact bundle of a pipeline run.

Entry point: ``run.run_pipeline(spec, out_dir, resume=..., progress=..., allow_user_code=...)``
(what ``mlaas4hep run`` and a service job call). The pieces, from the stream up:

    stream.py         the train split as the loop consumes it (positioned, prefetched, checked)
    feature_cache.py  train features cached on disk after epoch 1 (bounded by a disk budget)
    engine.py         the Engine protocol and the registry: mlp | xgboost | sgd | python
    torch_mlp.py      PyTorch engine (MLP from the spec; base of user_code.py)
    user_code.py      user PyTorch modules and Keras 3 models (torch backend), opt-in
    xgb.py, sk.py     XGBoost (external memory) and scikit-learn (partial_fit) engines
    loop.py           epochs, validation, early stopping, checkpoints (checkpoint.py), resume
    evaluate.py       weighted loss, accuracy, ROC AUC, confusion matrix
    report.py         the whole evaluation: working_points.py (ROC, rejection, working
                      points), overtraining.py (KS tests), resolution.py (regression
                      response/resolution), importance.py (permutation importance)
    diagnostics.py    run warnings (under-training, class imbalance)
    export.py         ONNX export (onnx_graph.py) and the ONNX Runtime parity check
    plots.py          rejection, scores (linear and log), history, importances, confusion,
                      regression (PNG + PDF, HEP style)
    bundle.py         spec.yaml, features.json, stats.json, metrics.json, README.md model
                      card (card.py: its metric tables)
    tracking.py       export of a finished bundle to MLflow (tracking_values.py: limits)
    progress.py       progress events for bars and JSON lines

torch, xgboost, scikit-learn and Keras are imported only by the engine that needs them.
"""
