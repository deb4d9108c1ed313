"""Wire formats, pure: no I/O, no AWS SDK. Below delivery (which encodes each frame for the
connection's dialect) and the dialects (which speak them).
"""
