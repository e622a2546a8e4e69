"""Serving: a verified bundle of both stages behind an HTTP API, fed by a live event store.

==================  =============================================================
module              job
==================  =============================================================
``bundle``          ``ranker bundle``: write / verify / load one self-contained directory
``features``        which ranker input column comes from the user, the item or the request
``store``           the event store interface, URLs, bulk load of an event file
``sqlite_store``    the embedded store (one WAL file)
``redis_store``     the shared store (a sorted set per user)
``generative``      a generative (HSTU) run as stage 2: store events → tokens → M-FALCON scores
``recommender``     the two stages on raw ids: history → candidates → ranked top-k
``schemas``         request bodies and their bounds
``metrics``         Prometheus text
``app``             the FastAPI app and ``ranker serve`` (uvicorn)
``watch``           ``ranker serve --watch``: swap to a new bundle that appears at the served path
``batch``           ``ranker recommend`` (users file → top-k) and ``ranker predict`` (rows → scores)
``export``          ``ranker export``: the ranker as a torch.export program (.pt2) or ONNX graph
==================  =============================================================

Needs the ``serve`` extra (``pip install 'ranker[serve]'``: FastAPI, uvicorn, redis, faiss); ``export`` needs
none for .pt2 and the ``export`` extra (onnx, onnxruntime, onnxscript) for ONNX.
"""
