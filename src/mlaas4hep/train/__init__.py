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
    export.py         ONNX export (onnx_graph.py) and the ONNX Runtime parity check
    plots.py          ROC, score distributions, history, importances (PNG)
    bundle.py         spec.yaml, features.json, stats.json, metrics.json, README.md model card
    progress.py       progress events for bars and JSON lines

torch, xgboost, scikit-learn and Keras are imported only by the engine that needs them.
"""
