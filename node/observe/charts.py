"""The status page's plots as inline SVG, drawn on the server with pygal.

pygal rather than hand-written SVG: axes with readable ticks, a date abscissa, stacked bars and
legends are its job, and it is pure Python (no browser-side library, nothing to build). Its
tooltips need JavaScript, which the page does not load (`js=[]`); pygal still writes a small inline
block of its own settings, which the page's Content-Security-Policy keeps from running.

Each function returns the SVG as markup for the template, or None when there is nothing to plot
(the page then says so in words).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo

import pygal
from markupsafe import Markup
from pygal.style import Style

from node.learning.quality import QualityRow
from node.observe.status_queries import Activity

# pygal puts a finder for its map plugins (pygal.maps.*, unused here) on sys.meta_path that has only
# the old find_module API; importers that ask every finder for find_spec (pytest's, among others)
# then fail with AttributeError. Take it off again.
sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, pygal.PluginImportFixer)]

BLUE, GREEN, RED, AMBER, GREY, PURPLE = "#2563eb", "#16a34a", "#dc2626", "#d97706", "#6b7280", "#7c3aed"
FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif"


def _style(*colors: str) -> Style:
    """The page's look, with the series colours in the order the series are added."""
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#374151",
        foreground_strong="#111827",
        foreground_subtle="#e5e7eb",
        opacity=".85",
        opacity_hover=".95",
        colors=colors,
        font_family=FONT,
        label_font_size=12,
        major_label_font_size=12,
        legend_font_size=12,
        title_font_size=13,
        value_font_size=11,
        tooltip_font_size=12,
    )


def _config(colors: tuple[str, ...], **options: object) -> dict[str, object]:
    """What every chart shares: a responsive size (the SVG scales to its box), no scripts."""
    return {
        "style": _style(*colors),
        "width": 560,
        "height": 250,
        "js": [],
        "disable_xml_declaration": True,
        "legend_at_bottom": True,
        "legend_box_size": 10,
        "margin": 6,
        "spacing": 8,
        "show_y_guides": True,
        "show_x_guides": False,
        "truncate_legend": -1,
        "truncate_label": -1,
        **options,
    }


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    return Markup(chart.render(is_unicode=True))  # pygal escapes the text it writes


def latency_chart(activity: Activity, zone: tzinfo) -> Markup | None:
    """Each draft of the last day: seconds from its last instance received to the draft, and to its
    delivery (both include the quiet period)."""
    if not activity.latency:
        return None
    hours = [hour for hour in activity.hours if hour >= activity.since][::3]
    chart = pygal.DateTimeLine(
        **_config(
            (BLUE, GREEN),
            stroke=False,
            dots_size=2.6,
            x_labels=hours,
            x_value_formatter=_clock(zone),
            y_title="seconds",
            value_formatter=lambda seconds: f"{seconds:.0f} s",
            include_x_axis=True,
            range=(0, None),
        )
    )
    chart.xrange = (activity.since.timestamp(), (activity.since + timedelta(days=1)).timestamp())
    chart.add("to the draft", [(point.drafted_at, point.seconds_to_draft) for point in activity.latency])
    delivered = [
        (point.drafted_at, point.seconds_to_deliver)
        for point in activity.latency
        if point.seconds_to_deliver is not None
    ]
    chart.add("to delivery", delivered, dots_size=1.8)
    return _svg(chart)


def drafts_chart(activity: Activity, zone: tzinfo) -> Markup | None:
    """Drafts written and studies failed, per hour of the last day."""
    if not any(activity.drafts_per_hour) and not any(activity.failures_per_hour):
        return None
    label = _clock(zone)
    chart = pygal.StackedBar(
        **_config(
            (BLUE, RED),
            x_labels=[label(hour) for hour in activity.hours],
            x_labels_major_every=3,
            show_minor_x_labels=False,
            y_title="per hour",
            min_scale=2,
            max_scale=6,
            spacing=4,
        )
    )
    chart.add("drafts", activity.drafts_per_hour)
    chart.add("failed", activity.failures_per_hour)
    return _svg(chart)


def agreement_chart(rows: Sequence[QualityRow]) -> Markup | None:
    """F1 of the drafts against the signed reports, per ISO week, one line per model version."""
    if not rows:
        return None
    weeks = sorted({row.week for row in rows if row.week is not None})
    chart = pygal.Line(
        **_config(
            (GREY, BLUE, GREEN, PURPLE, AMBER, RED),
            x_labels=[week.split("-", 1)[1] for week in weeks],
            range=(0, 1),
            y_title="F1",
            dots_size=3.5,
            allow_interruptions=True,
            value_formatter=lambda f1: f"{f1:.2f}",
        )
    )
    by_model: dict[str, dict[str, float]] = {}
    for row in rows:
        by_model.setdefault(f"{row.model.name} {row.model.version[:8]}", {})[row.week or ""] = row.f1
    for name, f1_by_week in by_model.items():
        chart.add(name, [f1_by_week.get(week) for week in weeks])
    return _svg(chart)


def _clock(zone: tzinfo) -> Callable[[datetime], str]:
    def label(moment: datetime) -> str:
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(zone).strftime("%H:%M")

    return label
