// A fan chart as a lightweight-charts custom series: one filled band per interval level
// (widest first, so narrower levels sit on top and look darker), the chosen level outlined.
// Each data point: {time, bands: [{level, lower, upper}], mid}.

import { customSeriesDefaultOptions } from "../vendor/lightweight-charts.js";

const FILL = "rgba(41, 98, 255, 0.16)";
const EDGE = "rgba(41, 98, 255, 0.9)";

class FanRenderer {
  constructor() {
    this.data = null;
    this.options = null;
  }

  update(data, options) {
    this.data = data;
    this.options = options;
  }

  draw(target, priceToY) {
    const data = this.data;
    if (!data || data.bars.length === 0) return;
    const levels = [...new Set(data.bars.flatMap((b) => b.originalData.bands.map((x) => x.level)))];
    levels.sort((a, b) => b - a);
    const chosen = this.options.selectedLevel;
    target.useBitmapCoordinateSpace(({ context: ctx, horizontalPixelRatio: hr, verticalPixelRatio: vr }) => {
      for (const level of levels) {
        const points = [];
        for (const bar of data.bars) {
          const band = bar.originalData.bands.find((x) => x.level === level);
          if (!band) continue;
          const yUp = priceToY(band.upper);
          const yLo = priceToY(band.lower);
          if (yUp === null || yLo === null) continue;
          points.push([bar.x * hr, yUp * vr, yLo * vr]);
        }
        if (points.length < 2) continue;
        ctx.beginPath();
        points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        for (let i = points.length - 1; i >= 0; i -= 1) ctx.lineTo(points[i][0], points[i][2]);
        ctx.closePath();
        ctx.fillStyle = FILL;
        ctx.fill();
        if (chosen === level) {
          ctx.lineWidth = Math.max(1, Math.round(1.5 * hr));
          ctx.strokeStyle = EDGE;
          ctx.setLineDash([4 * hr, 3 * hr]);
          ctx.beginPath();
          points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
          ctx.stroke();
          ctx.beginPath();
          points.forEach(([x, , y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
          ctx.stroke();
          ctx.setLineDash([]);
        }
      }
    });
  }
}

export class FanSeries {
  constructor() {
    this._renderer = new FanRenderer();
  }

  priceValueBuilder(row) {
    const lows = row.bands.map((b) => b.lower);
    const highs = row.bands.map((b) => b.upper);
    return [Math.min(...lows), Math.max(...highs), row.mid];
  }

  isWhitespace(row) {
    return !row.bands || row.bands.length === 0;
  }

  renderer() {
    return this._renderer;
  }

  update(data, options) {
    this._renderer.update(data, options);
  }

  defaultOptions() {
    return {
      ...customSeriesDefaultOptions,
      color: EDGE,
      selectedLevel: null,
      lastValueVisible: false,
      priceLineVisible: false,
      crosshairMarkerVisible: false,
    };
  }
}
