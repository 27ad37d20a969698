"""The inspector's rate plot, drawn with plain Qt (QPainter): two lines over the last minute.

Plain Qt rather than a plotting library: Debian's PyQt6 is all the tray needs
(pyqtgraph would bring scipy and Qt's developer tools with it)."""

from __future__ import annotations

from collections.abc import Sequence

from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PyQt6.QtWidgets import QSizePolicy, QWidget

from ..report import rate

LINES = (("in", QColor("#1565c0")), ("out", QColor("#2e7d32")))
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 12, 22, 24


class RatePlot(QWidget):
    """Rates in bytes per second, oldest first, one sample a second; the newest at the right edge."""

    def __init__(self, seconds: int) -> None:
        super().__init__()
        self.seconds = seconds
        self.series: tuple[Sequence[float], ...] = ((), ())
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_rates(self, rates_in: Sequence[float], rates_out: Sequence[float]) -> None:
        self.series = (list(rates_in), list(rates_out))
        self.update()

    def top(self) -> float:
        """The y axis' top: the highest rate shown, at least 1 kB/s so an idle jail's line lies flat at 0."""
        return max([1000.0, *self.series[0], *self.series[1]])

    def axis_label(self) -> str:
        """The y axis' top in human units (B/s, kB/s, MB/s)."""
        return rate(self.top())

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("white"))
        area = QRectF(MARGIN_LEFT, MARGIN_TOP, max(self.width() - MARGIN_LEFT - MARGIN_RIGHT, 1),
                      max(self.height() - MARGIN_TOP - MARGIN_BOTTOM, 1))
        top = self.top()
        painter.setPen(QPen(QColor("#9e9e9e")))
        painter.drawRect(area)
        text = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        painter.drawText(QRectF(0, area.top() - 8, MARGIN_LEFT - 6, 16), text, self.axis_label())
        painter.drawText(QRectF(0, area.bottom() - 8, MARGIN_LEFT - 6, 16), text, rate(0))
        below = QRectF(area.left(), area.bottom() + 4, area.width(), 16)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, f"{self.seconds - 1} seconds ago")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, "now")
        step = area.width() / max(self.seconds - 1, 1)
        for index, ((label, colour), values) in enumerate(zip(LINES, self.series)):
            painter.setPen(QPen(colour, 2))
            first = self.seconds - len(values)  # a short history starts further right
            painter.drawPolyline(QPolygonF([QPointF(area.left() + (first + i) * step,
                                                    area.bottom() - value / top * area.height())
                                            for i, value in enumerate(values)]))
            painter.drawText(QPointF(area.left() + 8 + index * 48, area.top() - 6), label)
        painter.end()
