"""Which workflow, and which node of it, a pause belongs to: fields of the pending entry.

A page shows a pause on a node only when the workflow open there is the one that queued it: node ids
repeat across workflows (every new workflow starts at 1), so a node id alone can put a pause, and the
route labels of the wrong graph, on a stranger's node. The frontend sends the workflow it queued (with
its "id", a uuid) as the prompt's extra_pnginfo, and every node's title in the prompt's `_meta`.
Stdlib only.
"""

from __future__ import annotations

from typing import Any

# A workflow id is a uuid; anything longer or stranger is not one the page could hold.
MAX_ID_LENGTH = 64
# The id of a graph that never got one of its own (frontend 1.27 keeps it from a file that has it), so
# it names no workflow in particular.
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def workflow_id(extra_pnginfo: Any) -> str | None:
    """The queued workflow's id, or None (queued through the API without one, or not a string)."""
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    value = workflow.get("id") if isinstance(workflow, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable() and value != ZERO_UUID:
        return value
    return None


def node_title(prompt: Any, node_id: Any) -> str | None:
    """The node's title as the queued prompt names it (`_meta.title`), for a page that has no such node."""
    node = prompt.get(str(node_id)) if isinstance(prompt, dict) else None
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    return title[:200] if isinstance(title, str) and title else None


def origin(extra_pnginfo: Any, prompt: Any, node_id: Any) -> dict:
    """The entry fields `workflow_id` and `node_title` (each None when unknown)."""
    return {"workflow_id": workflow_id(extra_pnginfo), "node_title": node_title(prompt, node_id)}


# The hidden inputs a gate node declares for origin().
HIDDEN = {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
