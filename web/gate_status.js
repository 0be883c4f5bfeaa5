// What a gate did that was not a person's choice, in the frontend's language: a timeout's outcome,
// a get_id that named no slot, a publish or caption write that failed. The server sends these as
// `datasete_gate.gate_status` {node_id, workflow_id, kind, reason, text, ...}; `text` is the English
// fallback.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { locate } from "./graph_locate.js";
import { t } from "./i18n.js";

const EVENT_GATE_STATUS = "datasete_gate.gate_status";

/** "timed out after 60 s: route_2", or "" when `detail` says nothing about a timeout. */
export function timedOutText(detail) {
    if (!detail?.timed_out && detail?.reason !== "timed_out") return "";
    return t("timeout.timedOut", "timed out after {seconds} s: {outcome}",
             { seconds: detail.timeout ?? "?", outcome: detail.on_timeout ?? "cancel" });
}

export function statusText(detail) {
    switch (detail?.reason) {
        case "timed_out":
            return timedOutText(detail);
        case "no_slot":
            return t("timeout.noSlot", "slot '{slot}' not found: nothing to gate", { slot: detail.slot ?? "" });
        case "no_image":
            return t("timeout.noImage", "no image wired and no get_id slot: nothing to gate");
        case "publish_failed":
            return t("timeout.publishFailed", "the choice stood, but the publish failed: {error}", { error: detail.text });
        case "write_failed":
            return t("timeout.writeFailed", "the caption could not be written: {error}", { error: detail.text });
        default:
            return detail?.text ?? "";
    }
}

/**
 * Call `show(node, text, detail)` for every status of gates of `kind`; call once, from setup(). `node` is
 * the gate's node in the workflow open on this page, at any depth of subgraphs (graph_locate.js), or
 * null when the workflow that queued the run is not the one open here or has no such node.
 */
export function onGateStatus(kind, show) {
    api.addEventListener(EVENT_GATE_STATUS, ({ detail }) => {
        if (detail && detail.kind === kind && detail.node_id !== null && detail.node_id !== undefined) {
            show(locate(app, detail)?.node ?? null, statusText(detail), detail);
        }
    });
}
