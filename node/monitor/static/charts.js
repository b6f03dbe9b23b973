// Charts of the monitor page, drawn with uPlot (vendored by `make setup`, never from a CDN).
// Each chart keeps its uPlot instance and rebuilds it only when its series change;
// otherwise new points go in through setData.

import uPlot from "./vendor/uPlot.esm.js";

const PALETTE = ["#2f6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285",
  "#e67700", "#5c940d", "#364fc7", "#a61e4d"];
const BANDS = ["rgba(47,111,219,0.06)", "rgba(217,72,15,0.06)", "rgba(43,138,62,0.07)",
  "rgba(134,46,156,0.06)"];
const HEIGHT = 220;

export const color = (i) => PALETTE[i % PALETTE.length];

function width(el) {
  return Math.max(el.clientWidth || el.parentElement.clientWidth || 400, 240);
}

// Background bands for the phases of progressive shrinking, with their names on top.
function phaseBands(getSegments) {
  return {
    hooks: {
      drawClear: [(u) => {
        const segments = getSegments();
        if (!segments.length) return;
        const { ctx } = u;
        const { left, top, width: w, height: h } = u.bbox;
        ctx.save();
        ctx.beginPath();
        ctx.rect(left, top, w, h);
        ctx.clip();
        ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui, sans-serif`;
        ctx.textBaseline = "top";
        ctx.textAlign = "left";
        segments.forEach((s, i) => {
          const x0 = u.valToPos(s.from - 0.5, "x", true);
          const x1 = u.valToPos(s.to + 0.5, "x", true);
          ctx.fillStyle = BANDS[i % BANDS.length];
          ctx.fillRect(x0, top, x1 - x0, h);
          ctx.fillStyle = "#6b7686";
          ctx.fillText(s.name, Math.max(x0, left) + 4 * devicePixelRatio, top + 3 * devicePixelRatio);
        });
        ctx.restore();
      }],
    },
  };
}

// A line chart over training steps: one series per name, with phase bands.
export class StepChart {
  constructor(el, { yLabel, log = false }) {
    this.el = el;
    this.yLabel = yLabel;
    this.log = log;
    this.names = [];
    this.segments = [];
    this.plot = null;
  }

  update(steps, names, rows, segments) {
    this.segments = segments;
    const data = [steps, ...rows];
    if (!this.plot || names.join("\u0000") !== this.names.join("\u0000")) {
      this.names = names;
      this.plot?.destroy();
      this.plot = new uPlot(this.options(names), data, this.el);
    } else {
      this.plot.setData(data);
    }
  }

  options(names) {
    return {
      width: width(this.el), height: HEIGHT,
      scales: { x: { time: false }, y: this.log ? { distr: 3 } : {} },
      axes: [{ label: "step", labelSize: 18 }, { label: this.yLabel, labelSize: 18, size: 56 }],
      series: [{ label: "step" }, ...names.map((name, i) => ({
        label: name, stroke: color(i), width: 1.6, spanGaps: false,
        points: { show: false },
      }))],
      plugins: [phaseBands(() => this.segments)],
      legend: { live: true },
    };
  }

  resize() { this.plot?.setSize({ width: width(this.el), height: HEIGHT }); }
}

// Accuracy (or another score) against FLOPs: the searched front, the chosen network
// highlighted, and the largest sub-network for reference when the manifest names it.
export class ParetoChart {
  constructor(el, { yLabel }) {
    this.el = el;
    this.yLabel = yLabel;
    this.plot = null;
  }

  update(front, chosen, largest) {
    const points = [
      ...front.map((p) => ({ x: p.flops / 1e6, front: p.score })),
      ...(chosen ? [{ x: chosen.flops / 1e6, chosen: chosen.score }] : []),
      ...(largest ? [{ x: largest.flops / 1e6, largest: largest.score }] : []),
    ].sort((a, b) => a.x - b.x);
    const pick = (key) => points.map((p) => (key in p ? p[key] : null));
    const data = [points.map((p) => p.x), pick("front"), pick("chosen"), pick("largest")];
    this.plot?.destroy();
    this.plot = new uPlot(this.options(), data, this.el);
  }

  options() {
    const dots = (stroke, fill, size) => ({ show: true, size, stroke, fill, width: 2 });
    return {
      width: width(this.el), height: HEIGHT + 40,
      scales: { x: { time: false } },
      axes: [{ label: "MFLOPs", labelSize: 18 }, { label: this.yLabel, labelSize: 18, size: 56 }],
      series: [
        { label: "MFLOPs" },
        { label: "Pareto front", stroke: "#2f6fdb", width: 1.2, spanGaps: true,
          paths: uPlot.paths.stepped({ align: 1 }), points: dots("#2f6fdb", "#fff", 7) },
        { label: "chosen", stroke: "#c62e3a", paths: () => null,
          points: dots("#c62e3a", "#c62e3a", 14) },
        { label: "largest", stroke: "#6b7686", paths: () => null,
          points: dots("#6b7686", "#fff", 10) },
      ],
    };
  }

  resize() { this.plot?.setSize({ width: width(this.el), height: HEIGHT + 40 }); }
}

// CPU utilisation of each host over wall time (the last few minutes).
export class CpuChart {
  constructor(el) {
    this.el = el;
    this.names = [];
    this.plot = null;
  }

  update(times, names, rows) {
    const data = [times, ...rows];
    if (!this.plot || names.join("\u0000") !== this.names.join("\u0000")) {
      this.names = names;
      this.plot?.destroy();
      this.plot = new uPlot({
        width: width(this.el), height: 120,
        scales: { y: { range: [0, 100] } },
        axes: [{}, { label: "CPU %", labelSize: 18, size: 48 }],
        series: [{}, ...names.map((name, i) => ({ label: name, stroke: color(i), width: 1.4 }))],
      }, data, this.el);
    } else {
      this.plot.setData(data);
    }
  }

  resize() { this.plot?.setSize({ width: width(this.el), height: 120 }); }
}
