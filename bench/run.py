"""python -m bench: every figure as a ratio against a reference measured in the same run on the
same arrays, printed as a table and written to bench/results.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

from bench.common import COMFY_SKIP, Row, comfy_env, ms, size_label

HERE = os.path.dirname(os.path.abspath(__file__))
MEASUREMENTS = ("codecs", "preview", "publish_load", "resume", "list", "memory", "throughput", "fastpaths", "loader",
                "pool", "store")


def _size(entry) -> str:
    return size_label(*entry["size"])


def _preview_rows(results, label) -> list[Row]:
    return [Row("1 preview" + label, _size(r), ms(r["ours_s"]),
                f"{ms(r['reference_s'])} ({'PreviewImage' if r['reference'] == 'comfy' else 'PreviewImage replica'})",
                r["ratio"], "<= 1.0x", r["ratio"] <= 1.0, r) for r in results]


def _publish_rows(results, label) -> list[Row]:
    return [Row("2 publish" + label, _size(r), ms(r["ours_s"]),
                f"{ms(r['reference_s'])} (bare encode of the uint8 arrays); of the difference: float to uint8 "
                f"{ms(r['conversion_s'])}, atomic swap + fsync {ms(r['atomic_overhead_s'])}",
                r["ratio"], "<= 1.10x", r["ratio"] <= 1.10, r) for r in results]


def _load_rows(results, label) -> list[Row]:
    return [Row("3 load" + label, _size(r), ms(r["ours_s"]),
                f"{ms(r['reference_s'])} (bare decode + LoadImage's conversion); "
                f"{r['vs_comfy_load_image']:.2f}x of LoadImage via Pillow",
                r["ratio"], "<= 1.10x", r["ratio"] <= 1.10, r) for r in results]


def _pool_rows(r, label) -> list[Row]:
    add = r["add"]
    name = "SaveImage" if add["reference"] == "comfy" else "SaveImage replica"
    rows = [Row("10 pool add" + label, f"{add['items']} items, {add['side']}x{add['side']}",
                f"{ms(add['ours_s'] / add['items'])}/item",
                f"{ms(add['reference_s'] / add['items'])}/item ({name}); last 100 items "
                f"{add['last_100_ratio']:.2f}x; on disk {add['pool_bytes'] / add['reference_bytes']:.2f}x "
                "of SaveImage's",
                add["ratio"], "<= 1.10x", add["ratio"] <= 1.10, {**add, "backend": r["backend"]})]
    for page in r["pages"]:
        name = "PreviewImage" if page["reference"] == "comfy" else "PreviewImage replica"
        case = f"{page['tiles']} tiles of {page['side']}x{page['side']}"
        rows.append(Row("11 grid page" + label, case, ms(page["ours_s"]), f"{ms(page['reference_s'])} ({name})",
                        page["ratio"], "<= 1.0x", page["ratio"] <= 1.0, {**page, "backend": r["backend"]}))
        rows.append(Row("11 grid page bytes" + label, case, f"{page['thumb_bytes'] / 1024:.0f} KiB of thumbnails",
                        f"{page['preview_bytes'] / 1024:.0f} KiB of PreviewImage PNGs", page["bytes_ratio"],
                        "<= 0.10x", page["bytes_ratio"] <= 0.10, {**page, "backend": r["backend"]}))
    return rows


def collect(quick: bool, only: set[str], log) -> tuple[list[Row], dict]:
    from bench import bus, codecs, fastpaths, folder, listing, memory, preview, resume, throughput
    from gates import imaging

    comfy = comfy_env()
    rows: list[Row] = []
    extra: dict = {}
    active = imaging.png_backend()
    # Also what a ComfyUI without the optional deflate package gets, when this one has it.
    alternatives = [None, "stdlib"] if active == "libdeflate" else [None]

    def step(name, fn):
        if name not in only:
            return
        log(f"[bench] {name} ...")
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one broken measurement must not hide the others
            traceback.print_exc()
            rows.append(Row(name, "-", "failed", f"{type(exc).__name__}: {str(exc)[-300:]}", None, "-", False))
        log(f"[bench] {name} done in {time.perf_counter() - started:.1f} s")

    def do_codecs():
        extra["codecs"] = codecs.run(quick)

    def do_preview():
        for backend in alternatives:
            label = "" if backend is None else " (without deflate)"
            results = preview.run(quick, comfy, backend, skip_largest=backend is not None)
            rows.extend(_preview_rows(results, label))

    def do_bus():
        for backend in alternatives:
            label = "" if backend is None else " (without deflate)"
            published, loaded = bus.run(quick, backend, skip_largest=backend is not None)
            rows.extend(_publish_rows(published, label))
            rows.extend(_load_rows(loaded, label))

    def do_resume():
        r = resume.run(quick)
        rows.append(Row("4 resume", f"{r['pauses']} pauses", f"median {ms(r['median_s'])}, p99 {ms(r['p99_s'])}",
                        f"POST answered in {ms(r['post_median_s'])} (median)", None,
                        "median < 5 ms, p99 < 20 ms", r["median_s"] < 0.005 and r["p99_s"] < 0.020, r))

    def do_list():
        r = listing.run(quick)
        for entry in r["rows"]:
            rows.append(Row("5 list_ids", f"{entry['slots']} slots in {entry['entries']} folders ({entry['kind']})",
                            f"warm {entry['warm_s'] * 1e6:.0f} us",
                            f"after a publish {ms(entry['relist_s'])}; re-check (every 2 s at most) "
                            f"{ms(entry['recheck_s'])}; cold {ms(entry['cold_s'])}",
                            None, "< 50 ms", entry["warm_s"] < 0.050, entry))
        extra["list_ids"] = r

    def do_memory():
        for backend in alternatives:
            r = memory.run(quick, backend)
            label = "" if backend is None else " (without deflate)"
            if "skipped" in r:
                rows.append(Row("6 memory" + label, "-", "skipped", r["skipped"], None, "<= 2x frame", None, r))
                continue
            rows.append(Row("6 memory" + label, f"{r['side']}x{r['side']} publish",
                            f"+{r['added_bytes'] / 2**20:.0f} MiB", f"frame {r['frame_bytes'] / 2**20:.0f} MiB uint8",
                            r["ratio"], "<= 2x frame", r["ratio"] <= 2.0, r))

    def do_throughput():
        if comfy is None:
            rows.append(Row("7 throughput", "-", "skipped", COMFY_SKIP, None, "report", None))
            return
        r = throughput.run(quick)
        if "skipped" in r:
            rows.append(Row("7 throughput", "-", "skipped", r["skipped"], None, "report", None, r))
            return
        phases = r["phases_s"]
        rows.append(Row("7 throughput", f"{r['prompts']} prompts, {r['side']}x{r['side']}",
                        f"gated {ms(r['gated_s'])}/prompt, gate {ms(r['gate_s'])}",
                        f"{ms(r['plain_s'])}/prompt without the gate; gated: queued to preview event "
                        f"{ms(phases['to_preview'])}, script's POST {ms(phases['choice'])}, POST to done "
                        f"{ms(phases['after_choice'])}", r["share"], "report (share of wall)", None, r))

    def do_fastpaths():
        for r in fastpaths.run(quick):
            rows.append(Row("8 fast path", r["name"], ms(r["ours_s"]), f"{ms(r['plain_s'])} without it ({r['what']})",
                            r["ratio"], "< 1.0x (else delete it)", r["ratio"] < 1.0, r))

    def do_loader():
        r = folder.run(quick)
        rows.append(Row("9 loader rescan", f"{r['images']:,} images in one folder",
                        f"warm {r['warm_s'] * 1e6:.0f} us; a next run's pick {r['pick_s'] * 1e6:.0f} us",
                        f"full re-listing {ms(r['full_relisting_s'])} (no cache, every run); after a caption "
                        f"is saved {ms(r['after_caption_s'])}; after an image is added {ms(r['after_change_s'])}; "
                        f"first listing {ms(r['cold_s'])}; same images in 100 subfolders, warm "
                        f"{r['subfolders_warm_s'] * 1e6:.0f} us",
                        r["ratio"], "<= 0.1x", r["ratio"] <= 0.1, r))

    def do_pool():
        from bench import pool

        for backend in alternatives:
            label = "" if backend is None else " (without deflate)"
            r = pool.run(quick, comfy, backend)
            rows.extend(_pool_rows(r, label))

    def do_store():
        from bench import store

        r = store.run(quick)
        if "skipped" in r:
            rows.append(Row("12 store", "-", "skipped", r["skipped"], None, "report", None, r))
            return
        for entry in r["rows"]:
            requests = ", ".join(f"{kind} {count}" for kind, count in entry["requests"].items())
            rows.append(Row(f"12 store {entry['operation']}", entry["case"],
                            f"s3 {ms(entry['s3_s'])}, {entry['request_total']} requests ({requests})",
                            f"local disk {ms(entry['local_s'])} ({r['endpoint']}: multiply the requests by your "
                            "store's round trip)", entry["ratio"], "report (requests)", None, entry))

    step("codecs", do_codecs)
    step("preview", do_preview)
    step("publish_load", do_bus)
    step("resume", do_resume)
    step("list", do_list)
    step("memory", do_memory)
    step("throughput", do_throughput)
    step("fastpaths", do_fastpaths)
    step("loader", do_loader)
    step("pool", do_pool)
    step("store", do_store)
    if comfy is None and "preview" in only:
        log("[bench] preview reference is a replica of PreviewImage's code path: " + COMFY_SKIP)
    return rows, extra


def format_table(rows: list[Row]) -> str:
    header = ("measurement", "case", "ratio", "ours", "reference", "target", "met")
    lines = [header]
    for row in rows:
        ratio = "-" if row.ratio is None else (f"{row.ratio * 100:.0f}%" if row.measurement == "7 throughput"
                                               else f"{row.ratio:.2f}x")
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        lines.append((row.measurement, row.case, ratio, row.ours, row.reference, row.target, met))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def format_codecs(codecs: dict) -> str:
    lines = [f"PNG encoders on {codecs['side']}x{codecs['side']} photo/smooth/flat, against Pillow level 4 "
             "(time: median of the three; size: largest of the three):",
             "| encoder | time | size (max) | photo | smooth | flat |", "|---|---|---|---|---|---|"]
    for name, entry in codecs["curve"].items():
        sizes = entry["size_vs_pillow4"]
        lines.append(f"| {name} | {entry['time_vs_pillow4']:.2f}x | {entry['size_vs_pillow4_max']:.3f} | "
                     + " | ".join(f"{sizes[k]:.3f}" for k in ("photo", "smooth", "flat")) + " |")
    lines.append(f"Lowest libdeflate level within 10% of Pillow 4 everywhere: {codecs['chosen_bus_level']} "
                 f"(configured: bus {codecs['configured_bus_level']}, preview {codecs['configured_preview_level']})")
    if codecs["missing"]:
        lines.append("Not installed, not measured: " + ", ".join(codecs["missing"]))
    lines.append("Decoders (photo): " + "; ".join(f"{name} {v['ms']:.1f} ms{'' if v['exact'] else ' NOT EXACT'}"
                                                  for name, v in codecs["decode"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (the smoke test)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    parser.add_argument("--output", default=os.path.join(HERE, "results.json"), help="where to write the JSON")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")

    from gates import imaging

    def log(message):
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows, extra = collect(args.quick, only, log)
    elapsed = time.perf_counter() - started
    table = format_table(rows)
    print(table)
    if "codecs" in extra:
        print()
        print(format_codecs(extra["codecs"]))
    if "list_ids" in extra:
        r = extra["list_ids"]
        print(f"list_ids cost per folder, cold: {', '.join(f'{v:.2f}' for v in r['cold_us_per_entry'])} us; "
              f"re-check: {', '.join(f'{v:.2f}' for v in r['recheck_us_per_entry'])} us (linear if flat); "
              f"a slot made by hand listed at once under the cache: {r['hand_written_slot_listed']}")
    print(f"\nbackend: {imaging.png_backend()}; ran in {elapsed:.0f} s")
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    result = {"quick": args.quick, "backend": imaging.png_backend(), "seconds": elapsed,
              "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
              "load_average": load, "comfyui": bool(comfy_env()), "rows": [row.as_dict() for row in rows],
              **extra}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, default=str)
    return 1 if any(row.ours == "failed" for row in rows) else 0
