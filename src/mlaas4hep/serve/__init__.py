"""Model serving: repository, ONNX Runtime, dynamic batching, V2 and TFaaS APIs.

Layers inside this package, bottom up (only the last two know about HTTP)::

    metadata, archive      the artifact format on disk, safe tarball extraction
    repository             <repo>/<model>/<version>/ layout, version policies, publishing
    runtime, batching      ONNX Runtime sessions; coalescing requests into batches
    manager                loaded versions, hot reload, repository polling
    codec, dataplane       V2/TFaaS wire formats; every operation, as plain Python
    v2, tfaas, app         thin FastAPI routes and the app/router factory

``serve`` loads artifacts only: it never imports the training, jobs or data layers.
"""
