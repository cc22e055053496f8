"""Markdown from a saved run's data: one run's report, or two runs compared. bench/run
prints and saves it; bench/report.py renders saved JSON with it."""


def fmt_ms(value):
    return "" if value is None else f"{value:.2f} ms"


def fmt_ratio(mine, theirs):
    if mine is None or not theirs:
        return ""
    return f"{mine / theirs:.2f}x"


def find_row(data, section, server):
    for row in data["rows"]:
        if row["section"] == section and row["server"] == server and row["rps"]:
            return row
    return None


def render(data):
    """The Markdown report of one run (the dict bench/run saves)."""
    cfg = data["config"]
    out = ["## Bartizan benchmark", ""]
    out.append(
        f"- {data['when']}, {data['cpus']} CPUs, load average {data['load_at_start']:.2f} at "
        f"start, Python {data['python']}, sections: {', '.join(data['sections'])}"
    )
    out.append(
        f"- wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration']} --latency "
        f"(after a {cfg['warmup']} warm-up), one worker process per server, "
        f"median of {cfg['runs']} run(s)"
    )
    out.append(f"- versions: {', '.join(data['versions'])}")
    if data["interrupted"]:
        out.append("- **interrupted**: partial results")
    out.append("")
    out.append(
        "| section | server | rps | p50 | p99 | peak RSS | errors "
        "| bartizan/server rps | bartizan/server p99 | bartizan/server RSS |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    not_measured, counted = [], []
    for row in data["rows"]:
        if row["rps"] is None:
            # A row that counts something other than a rate (the reloads' failed answers).
            if row["errors"] is not None:
                out.append(f"| {row['section']} | {row['label']} | | | | | {row['errors']} | | | |")
                counted.append(f"{row['section']}, {row['label']}: {row['note']}")
                continue
            status = row["note"].split(":", 1)[0] or "no result"
            out.append(f"| {row['section']} | {row['label']} | {status} | | | | | | | |")
            if row["note"]:
                not_measured.append(f"{row['label']}: {row['note']}")
            continue
        mine = find_row(data, row["section"], data["baselines"][row["section"]])
        rss = f"{row['rss_kib'] / 1024:.1f} MiB" if row["rss_kib"] else ""
        cells = [
            row["section"],
            row["label"],
            f"{row['rps']:,.0f}",
            fmt_ms(row["p50_ms"]),
            fmt_ms(row["p99_ms"]),
            rss,
            str(row["errors"]),
        ]
        if mine:
            cells += [
                fmt_ratio(mine["rps"], row["rps"]),
                fmt_ratio(mine["p99_ms"], row["p99_ms"]) if row["latency_comparable"] else "",
                fmt_ratio(mine["rss_kib"], row["rss_kib"]),
            ]
        else:
            cells += ["n/a", "n/a", "n/a"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Ratios are the section's Bartizan row divided by the row: above 1 is better for "
        "rps, below 1 is better for p99 and RSS. RSS is summed over the server's process "
        "tree. The in-process rows are the app called in a plain loop (calls/s, per-call "
        "latency); in the second, each call also wakes a process sleeping on a pipe, the "
        "least a server does per response."
    )
    for title, items in (
        ("Counted:", counted),
        ("Not measured:", not_measured),
        ("Notes:", data["notes"]),
    ):
        if items:
            out += ["", title, *(f"- {n}" for n in dict.fromkeys(items))]
    if data["goals"]:
        out += ["", "Goals:"]
        for goal in data["goals"]:
            mark = {True: "PASS", False: "FAIL", None: "n/a"}[goal["ok"]]
            out.append(f"- {mark} {goal['text']}")
    return "\n".join(out)


def compare(before, after):
    """rps and p99 of the rows two runs share, with AFTER's over BEFORE's."""
    out = [
        f"## {after['when']} against {before['when']}",
        "",
        "| section | server | rps before | rps after | after/before | p99 before | p99 after |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in after["rows"]:
        old = find_row(before, row["section"], row["server"])
        if not (old and row["rps"]):
            continue
        out.append(
            f"| {row['section']} | {row['label']} | {old['rps']:,.0f} | {row['rps']:,.0f} "
            f"| {fmt_ratio(row['rps'], old['rps'])} | {fmt_ms(old['p99_ms'])} "
            f"| {fmt_ms(row['p99_ms'])} |"
        )
    return "\n".join(out)
