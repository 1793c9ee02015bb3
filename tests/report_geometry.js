// Appended to a copy of the report by tests/report_layout.py: Chromium lays the page out, this measures it,
// and --dump-dom hands the measurements back as JSON in the element with id "geometry".
(() => {
  const box = (element) => {
    const r = element.getBoundingClientRect();
    return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
  };
  const texts = (root, selector) => [...root.querySelectorAll(selector)].map((t) => t.textContent.trim());
  const panels = [...document.querySelectorAll("section.panel")].map((panel) => {
    const svg = panel.querySelector("svg");
    const legend = panel.querySelector("svg g[id^='legend']");
    const background = svg && svg.querySelector("g[id^='axes'] > g[id^='patch'] path");
    const yLabel = svg && svg.querySelector("g[id='matplotlib.axis_2'] > g[id^='text'] text");
    const table = panel.querySelector("table");
    return {
      title: panel.querySelector("h2").textContent,
      points: Number(panel.dataset.points),
      empty: panel.classList.contains("empty"),
      text: panel.innerText,
      box: box(panel),
      titleBox: box(panel.querySelector("h2")),
      svg: svg && box(svg),
      plot: background && box(background),
      legend: legend && box(legend),
      legendTexts: legend ? texts(legend, "text") : [],
      legendColours: legend ? [...legend.querySelectorAll("path")].map((p) => getComputedStyle(p).stroke)
        .filter((c) => c && c !== "none") : [],
      xTicks: svg ? texts(svg, "g[id^='xtick'] text") : [],
      yTicks: svg ? texts(svg, "g[id^='ytick'] text") : [],
      yLabel: yLabel ? yLabel.textContent.trim() : null,
      caption: panel.querySelector(".caption") ? panel.querySelector(".caption").textContent : "",
      table: table ? [...table.querySelectorAll("tr")].map((row) => texts(row, "th, td")) : [],
      svgTexts: svg ? texts(svg, "text") : [],
      waterfalls: [...panel.querySelectorAll(".waterfall")].map((w) => ({
        heading: w.querySelector("h3").textContent,
        box: box(w),
        rows: texts(w, ".op"),
        bars: [...w.querySelectorAll(".bar")].map((bar) => ({ bar: box(bar), lane: box(bar.parentElement) })),
      })),
    };
  });
  const geometry = {
    viewport: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    text: document.body.innerText,
    headline: document.querySelector(".headline") ? document.querySelector(".headline").textContent : null,
    housekeeping: document.querySelector(".housekeeping") ? document.querySelector(".housekeeping").textContent : null,
    notice: document.querySelector(".notice") ? document.querySelector(".notice").textContent : null,
    panels,
  };
  const pre = document.createElement("pre");
  pre.id = "geometry";
  pre.textContent = JSON.stringify(geometry);
  document.body.appendChild(pre);
})();
