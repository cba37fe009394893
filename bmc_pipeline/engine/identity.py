"""Ids for documents that arrive without one (legacy JSON exports, conversations found on disk).

The id is derived from the document, so restoring or recovering the same file twice finds the
same ids and inserts nothing new. A conversation (a ``session_id`` string and a ``messages`` list)
is identified by its session, so a later copy of the same conversation is the same document; any
other document by its whole content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import bson
from bson import json_util


def derived_id(doc: Mapping[str, Any]) -> bson.ObjectId:
    """The ``_id`` a document without one gets: the same every time for the same document.

    Raises ``UnicodeEncodeError`` for a session id with a lone surrogate (BSON cannot hold it
    either), which callers report as a document that cannot be stored.
    """
    session = doc.get("session_id")
    if isinstance(session, str) and isinstance(doc.get("messages"), list):
        seed = ("session_id:" + session).encode()
    else:
        text = json_util.dumps(
            dict(doc), json_options=json_util.CANONICAL_JSON_OPTIONS, sort_keys=True
        )
        seed = b"content:" + text.encode("utf-8", "surrogatepass")
    return bson.ObjectId(hashlib.sha256(seed).digest()[:12])
