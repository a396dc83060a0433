"""The failover plot (failover time against lease TTL) as an SVG written with the standard library."""

from xml.sax.saxutils import escape

WIDTH, HEIGHT = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 40, 60
CRASH, GRACEFUL, BOUND = "#c0392b", "#2471a3", "#7f8c8d"
# issue 15's series (bench_handover.plot_points): hollow marks, one color per way of running
LIVING = ((("loop", True), "#1e8449", "loop, blocking reads"), (("foreground", True), "#7d3c98",
                                                                   "foreground, blocking reads"),
          (("loop", False), "#d68910", "loop, polling"), (("foreground", False), "#a04000", "foreground, polling"))


def _nice_step(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 20, 50, 100):
        if span / step <= 8:
            return step
    return 200.0


def failover_svg(cases: list, title: str, living: list = (), subtitle: str = "") -> str:
    """Crash and graceful failover (median, whiskers min-max) per lease TTL, with the bound ttl + interval;
    ``living``: section 6's points (bench_handover.plot_points), beside section 4's at their lease TTL."""
    cases = [c for c in cases if not c.get("skipped") and c.get("crash", {}).get("median") is not None]
    if not cases:
        return ""
    x_max = max(c["ttl_s"] for c in cases) * 1.1
    y_max = max([c["bound_s"] for c in cases] + [c[k]["max"] or 0 for c in cases for k in ("crash", "graceful")]
                + [p["max"] for p in living]) * 1.1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    sx = lambda v: LEFT + v / x_max * plot_w  # noqa: E731
    sy = lambda v: TOP + plot_h - v / y_max * plot_h  # noqa: E731
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="12">' % (WIDTH, HEIGHT, WIDTH, HEIGHT),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>' % (LEFT, escape(title)),
           '<text x="%d" y="34" font-size="10">%s</text>' % (LEFT, escape(subtitle))]
    out += _axes(x_max, y_max, sx, sy, plot_w, plot_h)
    # the bound: ttl + interval, with interval = ttl / 3 in every case measured here
    pts = sorted((c["ttl_s"], c["bound_s"]) for c in cases)
    slope = pts[-1][1] / pts[-1][0]
    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6,4"/>'
               % (sx(0), sy(0), sx(x_max), sy(min(y_max, slope * x_max)), BOUND))
    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="2,3"/>'
               % (sx(0), sy(0), sx(min(x_max, y_max)), sy(min(x_max, y_max)), BOUND))
    for c in cases:
        for kind, color, dx in (("crash", CRASH, -4), ("graceful", GRACEFUL, 4)):
            s = c[kind]
            if s.get("median") is None:
                continue
            x = sx(c["ttl_s"]) + dx
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'
                       % (x, sy(s["min"]), x, sy(s["max"]), color))
            shape = ('<circle cx="%.1f" cy="%.1f" r="4.5" fill="%s"/>' if kind == "crash"
                     else '<rect x="%.1f" y="%.1f" width="8" height="8" fill="%s"/>')
            if kind == "crash":
                out.append(shape % (x, sy(s["median"]), color))
            else:
                out.append(shape % (x - 4, sy(s["median"]) - 4, color))
            out.append('<text x="%.1f" y="%.1f" fill="%s" font-size="10">%.1fs</text>'
                       % (x + 6, sy(s["median"]) + (4 if kind == "crash" else 12), color, s["median"]))
    out += _living(living, sx, sy)
    out += _legend(WIDTH - RIGHT + 15, TOP + 10, [entry for entry in LIVING if any(
        (p["mode"], p["blocking"]) == entry[0] for p in living)])
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _axes(x_max, y_max, sx, sy, plot_w, plot_h) -> list:
    out = ['<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (LEFT, TOP + plot_h, LEFT + plot_w, TOP + plot_h),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (LEFT, TOP, LEFT, TOP + plot_h)]
    for axis, vmax in (("x", x_max), ("y", y_max)):
        step = _nice_step(vmax)
        v = 0.0
        while v <= vmax:
            if axis == "x":
                out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>'
                           % (sx(v), TOP + plot_h, sx(v), TOP + plot_h + 5))
                out.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (sx(v), TOP + plot_h + 18, v))
            else:
                out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dddddd"/>'
                           % (LEFT, sy(v), LEFT + plot_w, sy(v)))
                out.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (LEFT - 8, sy(v) + 4, v))
            v += step
    out.append('<text x="%.1f" y="%d" text-anchor="middle">lease TTL (s); renew / heartbeat interval = TTL / 3</text>'
               % (LEFT + plot_w / 2, HEIGHT - 15))
    out.append('<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">time without a leader (s)'
               '</text>' % (TOP + plot_h / 2, TOP + plot_h / 2))
    return out


def _living(points: list, sx, sy) -> list:
    """Hollow marks (circle: crash, kill to acquisition; square: graceful, release to acquisition), fanned out
    beside section 4's marks at the same lease TTL, with min-max whiskers."""
    out = []
    slots = {"crash": 0, "graceful": 0}
    for key, color, _label in LIVING:
        for p in points:
            if (p["mode"], p["blocking"]) != key or p.get("median") is None:
                continue
            slots[p["kind"]] += 1
            x = sx(p["ttl_s"]) + (1 if p["kind"] == "graceful" else -1) * (6 + 8 * slots[p["kind"]])
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>'
                       % (x, sy(p["min"]), x, sy(p["max"]), color))
            if p["kind"] == "crash":
                out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="white" stroke="%s" stroke-width="1.5"/>'
                           % (x, sy(p["median"]), color))
            else:
                out.append('<rect x="%.1f" y="%.1f" width="7" height="7" fill="white" stroke="%s" '
                           'stroke-width="1.5"/>' % (x - 3.5, sy(p["median"]) - 3.5, color))
    return out


def _legend(x: int, y: int, living: list = ()) -> list:
    out = _legend_section4(x, y)
    y += 112
    if living:
        out.append('<text x="%d" y="%d" font-size="10">hollow: issue 15, 6c/6d</text>' % (x, y))
    for i, (_key, color, label) in enumerate(living):
        out.append('<circle cx="%d" cy="%d" r="3.5" fill="white" stroke="%s" stroke-width="1.5"/>'
                   % (x + 5, y + 14 + 14 * i, color))
        out.append('<text x="%d" y="%d" font-size="10">%s</text>' % (x + 16, y + 18 + 14 * i, label))
    return out


def _legend_section4(x: int, y: int) -> list:
    return ['<circle cx="%d" cy="%d" r="4.5" fill="%s"/>' % (x + 5, y, CRASH),
            '<text x="%d" y="%d">crash (SIGKILL)</text>' % (x + 16, y + 4),
            '<rect x="%d" y="%d" width="8" height="8" fill="%s"/>' % (x + 1, y + 16, GRACEFUL),
            '<text x="%d" y="%d">graceful (SIGTERM)</text>' % (x + 16, y + 24),
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-dasharray="6,4"/>' % (x, y + 40, x + 12, y + 40,
                                                                                          BOUND),
            '<text x="%d" y="%d">bound: ttl + interval</text>' % (x + 16, y + 44),
            '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-dasharray="2,3"/>' % (x, y + 58, x + 12, y + 58,
                                                                                          BOUND),
            '<text x="%d" y="%d">lease ttl</text>' % (x + 16, y + 62),
            '<text x="%d" y="%d" font-size="10">mark: median</text>' % (x, y + 84),
            '<text x="%d" y="%d" font-size="10">bar: min to max</text>' % (x, y + 98)]
