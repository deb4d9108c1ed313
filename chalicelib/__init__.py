"""Runtime code of the realtime service: everything between the doors of ``app.py``.

Only code that every Lambda needs belongs here (the whole folder is zipped into each
function). Dev tooling lives in ``devtools/``; tests in ``tests/``.
"""
