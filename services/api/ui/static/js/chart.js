// The price chart: candles (lightweight-charts), the forecast path and its fan of bands.

import {
  CandlestickSeries,
  ColorType,
  createChart,
  LineSeries,
  LineStyle,
} from "../vendor/lightweight-charts.js";
import { bandsOf } from "./data.js";
import { FanSeries } from "./fan.js";

// Bars in view at first: about 7.5 px per candle (160 at 1280 px wide, ~50 on a phone).
const visibleBars = (width) => Math.max(48, Math.min(160, Math.round(width / 7.5)));

const toTime = (iso) => Math.floor(Date.parse(iso) / 1000);

export function toCandle(bar) {
  return { time: toTime(bar.bucket), open: bar.open, high: bar.high, low: bar.low, close: bar.close };
}

export class PriceChart {
  constructor(container) {
    this.container = container;
    this.chart = createChart(container, {
      autoSize: true,
      layout: {
        attributionLogo: false, // its <style> element would need 'unsafe-inline'; credited in the footer
        background: { type: ColorType.Solid, color: "#ffffff" },
        textColor: "#1f2430",
      },
      grid: { vertLines: { color: "#eef0f4" }, horzLines: { color: "#eef0f4" } },
      timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 4 },
      rightPriceScale: { scaleMargins: { top: 0.1, bottom: 0.1 } },
    });
    this.fan = this.chart.addCustomSeries(new FanSeries(), { selectedLevel: null });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: "#138a5c",
      downColor: "#c23b3b",
      borderVisible: false,
      wickUpColor: "#138a5c",
      wickDownColor: "#c23b3b",
    });
    this.path = this.chart.addSeries(LineSeries, {
      color: "#2962ff",
      lineWidth: 2,
      lineStyle: LineStyle.Dashed,
      lastValueVisible: true,
      priceLineVisible: false,
      title: "forecast",
    });
    this.bars = [];
    this.records = [];
    this.level = null;
  }

  setBars(bars) {
    this.bars = bars.map(toCandle);
    this.candles.setData(this.bars);
    this.redrawForecast();
    const n = this.bars.length;
    const ahead = this.records.length + 4;
    const shown = visibleBars(this.container.clientWidth || 1200);
    if (n) this.chart.timeScale().setVisibleLogicalRange({ from: Math.max(0, n - shown), to: n + ahead });
  }

  updateBar(bar) {
    const candle = toCandle(bar);
    const last = this.bars[this.bars.length - 1];
    if (last && candle.time < last.time) return;
    if (last && candle.time === last.time) this.bars[this.bars.length - 1] = candle;
    else this.bars.push(candle);
    this.candles.update(candle);
  }

  setForecast(records, level) {
    this.records = [...records].sort((a, b) => a.horizon - b.horizon);
    this.level = level;
    this.redrawForecast();
  }

  setLevel(level) {
    this.level = level;
    this.fan.applyOptions({ selectedLevel: level });
  }

  redrawForecast() {
    const records = this.records;
    if (!records.length) {
      this.fan.setData([]);
      this.path.setData([]);
      return;
    }
    const origin = toTime(records[0].as_of);
    const anchor = this.bars.find((b) => b.time === origin) ?? this.bars[this.bars.length - 1];
    const points = [];
    const fan = [];
    if (anchor && anchor.time < toTime(records[0].target_time)) {
      const levels = bandsOf(records[0]).map((b) => b.level);
      points.push({ time: anchor.time, value: anchor.close });
      fan.push({
        time: anchor.time,
        mid: anchor.close,
        bands: levels.map((level) => ({ level, lower: anchor.close, upper: anchor.close })),
      });
    }
    for (const record of records) {
      const time = toTime(record.target_time);
      if (points.length && time <= points[points.length - 1].time) continue;
      points.push({ time, value: record.predicted_price });
      fan.push({ time, mid: record.predicted_price, bands: bandsOf(record) });
    }
    this.fan.applyOptions({ selectedLevel: this.level });
    this.fan.setData(fan);
    this.path.setData(points);
  }

  // Resolves once the chart has painted what it was given (two animation frames).
  drawn() {
    return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  }

  remove() {
    this.chart.remove();
  }
}

// A small line chart (accuracy over time): one series per entry, each on its own scale.
export class LineChart {
  constructor(container, series) {
    this.chart = createChart(container, {
      autoSize: true,
      layout: { attributionLogo: false, background: { type: ColorType.Solid, color: "#ffffff" }, textColor: "#1f2430" },
      grid: { vertLines: { visible: false }, horzLines: { color: "#eef0f4" } },
      leftPriceScale: { visible: true },
      timeScale: { timeVisible: false },
    });
    for (const s of series) {
      const line = this.chart.addSeries(LineSeries, { color: s.color, lineWidth: 2, title: s.title, priceScaleId: s.scale });
      line.setData(s.points);
    }
    this.chart.timeScale().fitContent();
  }

  remove() {
    this.chart.remove();
  }
}
