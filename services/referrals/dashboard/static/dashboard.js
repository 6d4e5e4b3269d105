/* The coordination dashboard (SPEC 12), served with the page by the referrals service.

   The admin key is asked once: it is kept in this tab's session storage (never a cookie,
   never the address) and sent with every request as `Authorization: Bearer`. Every request
   goes to the service that served the page, by paths relative to it:
   - indicators?group_by=month         referrals per month by status (stacked bars)
   - indicators?group_by=service_type  hours to acceptance, median and 90th percentile
   - gaps?level=region                 the region x service type gap table
   - referrals?status=requested        overdue: requested referrals past their deadline
   - queues/unassigned                 unassigned referrals
   Links to act on a referral open its operation in the service's own /docs.
   The page's state is in `data-state` attributes (the body's and each section's). */
(function () {
  "use strict";

  var KEY_ITEM = "relais.dashboard.admin-key";
  var PAGE_SIZE = 500; // the API's largest page
  var MAX_PAGES = 10; // lists read at most 5,000 referrals
  var DOCS = {
    view: "docs#/referrals/referrals-get_referral",
    cancel: "docs#/referrals/referrals-cancel",
    assign: "docs#/coordination/coordination-assign",
  };
  var COLOURS = {
    requested: "#4c78a8",
    accepted: "#72b7b2",
    in_progress: "#54a24b",
    completed: "#2e7d32",
    unassigned: "#b279a2",
    rejected: "#e45756",
    expired: "#f58518",
    failed: "#9d755d",
    cancelled: "#bab0ac",
  };
  var OTHER_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"];
  var CHART_CONFIG = { displayModeBar: false, responsive: true, scrollZoom: false };
  var WHY_UNASSIGNED = {
    no_candidate: "no service covers it",
    max_attempts: "four routed attempts ended without a taker",
  };

  var generation = 0; // each load of the figures; an older one's answers are dropped
  var gapRows = [];

  function byId(id) {
    return document.getElementById(id);
  }

  // --- The key -------------------------------------------------------------------------

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_ITEM);
    } catch (error) {
      return null;
    }
  }

  function forgetKey() {
    try {
      window.sessionStorage.removeItem(KEY_ITEM);
    } catch (error) {
      /* nothing kept */
    }
  }

  function KeyRefused(status) {
    this.status = status;
    this.message =
      status === 403
        ? "This is a partner's key: the dashboard needs an admin key."
        : "The hub does not accept this key (unknown or revoked).";
  }

  // --- The API -------------------------------------------------------------------------

  function withParams(path, params) {
    var query = new URLSearchParams();
    Object.keys(params).forEach(function (name) {
      if (params[name] !== null && params[name] !== undefined) query.set(name, params[name]);
    });
    var text = query.toString();
    return text ? path + (path.indexOf("?") < 0 ? "?" : "&") + text : path;
  }

  async function api(path) {
    var key = storedKey();
    if (!key) throw new KeyRefused(401);
    var response = await fetch(path, {
      headers: { Authorization: "Bearer " + key, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) throw new KeyRefused(response.status);
    if (!response.ok) {
      var detail = "";
      try {
        var problem = await response.json();
        detail = problem.detail || problem.title || "";
      } catch (error) {
        /* not a problem document */
      }
      throw new Error(
        "GET /" + path.split("?")[0] + " answered " + response.status + (detail ? ": " + detail : "")
      );
    }
    return response.json();
  }

  /* Every item of a list, following next_cursor, up to MAX_PAGES pages. */
  async function allPages(path) {
    var items = [];
    var cursor = null;
    for (var page = 0; page < MAX_PAGES; page += 1) {
      var answer = await api(withParams(path, { limit: PAGE_SIZE, cursor: cursor }));
      items = items.concat(answer.items);
      cursor = answer.next_cursor;
      if (!cursor) return { items: items, complete: true };
    }
    return { items: items, complete: false };
  }

  // --- Formatting ----------------------------------------------------------------------

  function isoDate(date) {
    return date.toISOString().slice(0, 10);
  }

  function statusLabel(status) {
    return status.replace(/_/g, " ");
  }

  function serviceLabel(code) {
    return code.replace(".", ":<br>").replace(/_/g, " ");
  }

  function monthLabel(month) {
    var parts = month.split("-");
    var date = new Date(Date.UTC(Number(parts[0]), Number(parts[1]) - 1, 1));
    return date.toLocaleDateString("en-GB", { month: "short", year: "numeric", timeZone: "UTC" });
  }

  function when(text) {
    return text ? text.slice(0, 16).replace("T", " ") + " UTC" : "";
  }

  function duration(ms) {
    var minutes = Math.max(0, Math.floor(ms / 60000));
    var days = Math.floor(minutes / 1440);
    var hours = Math.floor((minutes % 1440) / 60);
    if (days) return days + " d " + hours + " h";
    if (hours) return hours + " h " + (minutes % 60) + " min";
    return (minutes % 60) + " min";
  }

  function figure(value) {
    return value === null || value === undefined ? null : value;
  }

  function text(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  // --- Drawing -------------------------------------------------------------------------

  function chartLayout(extra) {
    return Object.assign(
      {
        autosize: true,
        height: 340,
        margin: { l: 44, r: 12, t: 32, b: 40 },
        font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
        paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "rgba(0,0,0,0)",
        dragmode: false,
        legend: { orientation: "h", x: 0, y: 1.01, yanchor: "bottom" },
      },
      extra
    );
  }

  async function draw(element, traces, layout) {
    if (!window.Plotly) throw new Error("the charting library (plotly.js) did not load");
    await window.Plotly.react(element, traces, layout, CHART_CONFIG);
  }

  function clearChart(element) {
    if (window.Plotly) window.Plotly.purge(element);
  }

  function cell(row, label, value, className) {
    var td = document.createElement("td");
    td.dataset.label = label;
    if (value instanceof Node) td.appendChild(value);
    else td.textContent = value;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function headers(table) {
    return Array.prototype.map.call(table.tHead.rows[0].cells, function (th) {
      return th.textContent;
    });
  }

  function docsLinks(referral, actions) {
    var span = document.createElement("span");
    actions.forEach(function (action) {
      var link = document.createElement("a");
      link.href = DOCS[action];
      link.target = "_blank";
      link.rel = "noopener";
      link.dataset.action = action;
      link.textContent = action;
      span.appendChild(link);
    });
    var id = document.createElement("code");
    id.textContent = referral.id;
    id.title = "the referral_id to give the operation";
    span.appendChild(id);
    return span;
  }

  function partnerId(id) {
    var code = document.createElement("code");
    code.textContent = id ? id.slice(0, 8) : "—";
    if (id) code.title = id;
    return code;
  }

  // --- The sections --------------------------------------------------------------------

  /* Runs one section's work; its state and message say how it went. A refused key is
     passed on: the whole page locks. */
  async function section(id, stale, work) {
    var element = byId(id);
    var message = element.querySelector(".message");
    element.dataset.state = "loading";
    message.textContent = "Loading…";
    try {
      var outcome = await work();
      if (stale()) return;
      element.dataset.state = outcome.state;
      message.textContent = outcome.message || "";
    } catch (error) {
      if (error instanceof KeyRefused) throw error;
      if (stale()) return;
      element.dataset.state = "error";
      message.textContent = "Could not load this: " + error.message;
    }
  }

  function suppressedNote(rows) {
    return rows.some(function (row) {
      return row.suppressed;
    })
      ? "Some figures are withheld (small counts)."
      : "";
  }

  async function referralsByStatus(period, stale) {
    var answer = await api(
      withParams("indicators", { from: period.from, to: period.to, group_by: "month" })
    );
    if (stale()) return {};
    var element = byId("chart-status");
    var rows = answer.rows.slice().sort(function (a, b) {
      return a.month < b.month ? -1 : a.month > b.month ? 1 : 0;
    });
    if (!rows.length) {
      clearChart(element);
      return { state: "empty", message: "No referral was created in this period." };
    }
    var months = rows.map(function (row) {
      return row.month;
    });
    // The statuses in the order the indicators give them; those with no referral left out.
    var statuses = [];
    rows.forEach(function (row) {
      Object.keys(row.by_status || {}).forEach(function (status) {
        if (statuses.indexOf(status) < 0) statuses.push(status);
      });
    });
    var traces = statuses
      .filter(function (status) {
        return rows.some(function (row) {
          return (row.by_status || {})[status] > 0;
        });
      })
      .map(function (status, i) {
        return {
          type: "bar",
          name: statusLabel(status),
          meta: status,
          x: months,
          y: rows.map(function (row) {
            return figure((row.by_status || {})[status]);
          }),
          marker: { color: COLOURS[status] || OTHER_COLOURS[i % OTHER_COLOURS.length] },
          hovertemplate: "%{y} " + statusLabel(status) + "<extra></extra>",
        };
      });
    await draw(
      element,
      traces,
      chartLayout({
        barmode: "stack",
        xaxis: {
          type: "category",
          tickvals: months,
          ticktext: months.map(monthLabel),
          fixedrange: true,
        },
        yaxis: { title: { text: "referrals" }, rangemode: "tozero", fixedrange: true },
      })
    );
    return { state: "ready", message: suppressedNote(rows) };
  }

  async function timeToAcceptance(period, stale) {
    var answer = await api(
      withParams("indicators", { from: period.from, to: period.to, group_by: "service_type" })
    );
    if (stale()) return {};
    var element = byId("chart-acceptance");
    var rows = answer.rows.slice().sort(function (a, b) {
      return a.service_type < b.service_type ? -1 : a.service_type > b.service_type ? 1 : 0;
    });
    if (!rows.length) {
      clearChart(element);
      return { state: "empty", message: "No referral was created in this period." };
    }
    var types = rows.map(function (row) {
      return row.service_type;
    });
    var measures = [
      ["hours_to_acceptance_median", "median", "#4c78a8"],
      ["hours_to_acceptance_p90", "90th percentile", "#f58518"],
    ];
    var traces = measures.map(function (measure) {
      return {
        type: "bar",
        orientation: "h",
        name: measure[1],
        meta: measure[0],
        y: types,
        x: rows.map(function (row) {
          return figure(row[measure[0]]);
        }),
        marker: { color: measure[2] },
        // Each bar says its figure: readable without hovering, on a phone too.
        texttemplate: "%{x:.1f} h",
        textposition: "outside",
        cliponaxis: false,
        hovertemplate: "%{x:.2f} h<extra>" + measure[1] + "</extra>",
      };
    });
    await draw(
      element,
      traces,
      chartLayout({
        barmode: "group",
        height: 110 + 52 * rows.length,
        margin: { l: 12, r: 12, t: 32, b: 40 },
        xaxis: {
          title: { text: "hours" },
          rangemode: "tozero",
          exponentformat: "none",
          fixedrange: true,
        },
        yaxis: {
          type: "category",
          tickvals: types,
          ticktext: types.map(serviceLabel),
          autorange: "reversed",
          automargin: true,
          fixedrange: true,
        },
      })
    );
    var accepted = rows.some(function (row) {
      return row.hours_to_acceptance_median !== null;
    });
    return {
      state: "ready",
      message: accepted
        ? suppressedNote(rows)
        : "None of the referrals created in this period has been accepted yet.",
    };
  }

  function needsAttention(row) {
    return row.gap || row.saturated || (row.demand && row.demand.total > 0);
  }

  function gapStatus(row) {
    if (row.gap) return "Gap";
    if (row.saturated) return "Saturated";
    return row.services > 0 ? "Covered" : "—";
  }

  function freeCapacity(row) {
    if (row.free_capacity !== null && row.free_capacity !== undefined) {
      return String(row.free_capacity);
    }
    return row.services > 0 ? "no limit" : "—";
  }

  function renderGaps() {
    var table = byId("gaps-table");
    var labels = headers(table);
    var everything = byId("gaps-filter").value === "all";
    var shown = gapRows.filter(function (row) {
      return everything || needsAttention(row);
    });
    var body = document.createElement("tbody");
    shown.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.className = row.gap ? "gap" : row.saturated ? "saturated" : "";
      var demand = row.demand || {};
      cell(tr, labels[0], row.area_name + " (" + row.area_code + ")");
      cell(tr, labels[1], row.service_type);
      cell(tr, labels[2], text(demand.waiting_steps), "number");
      cell(tr, labels[3], text(demand.unassigned), "number");
      cell(tr, labels[4], text(demand.recent_referrals), "number");
      cell(tr, labels[5], text(row.services), "number");
      cell(tr, labels[6], freeCapacity(row), "number");
      cell(tr, labels[7], gapStatus(row), "status");
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
    var gaps = gapRows.filter(function (row) {
      return row.gap;
    }).length;
    var saturated = gapRows.filter(function (row) {
      return row.saturated;
    }).length;
    byId("gaps").querySelector(".summary").textContent =
      gaps + (gaps === 1 ? " gap" : " gaps") + " and " + saturated + " saturated, " +
      shown.length + " of " + gapRows.length + " rows shown.";
  }

  async function serviceGaps(stale) {
    var answer = await api(withParams("gaps", { level: "region" }));
    if (stale()) return {};
    gapRows = answer.rows;
    renderGaps();
    return {
      state: gapRows.length ? "ready" : "empty",
      message: gapRows.length ? "" : "No area or service type is known yet.",
    };
  }

  function fillList(tableId, countOf, referrals, columns) {
    var table = byId(tableId);
    var labels = headers(table);
    var body = document.createElement("tbody");
    referrals.forEach(function (referral) {
      var tr = document.createElement("tr");
      tr.dataset.referralId = referral.id;
      columns(referral).forEach(function (column, i) {
        cell(tr, labels[i], column[0], column[1]);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
    byId(countOf).querySelector(".count").textContent = "(" + referrals.length + ")";
  }

  async function overdueReferrals(stale) {
    var listed = await allPages("referrals?status=requested");
    if (stale()) return {};
    var now = Date.now();
    var overdue = listed.items
      .filter(function (referral) {
        return referral.deadline_at && Date.parse(referral.deadline_at) < now;
      })
      .sort(function (a, b) {
        return Date.parse(a.deadline_at) - Date.parse(b.deadline_at);
      });
    fillList("overdue-table", "overdue", overdue, function (referral) {
      return [
        [referral.case_reference || referral.case_id],
        [referral.service_type],
        [partnerId(referral.assignee_partner_id)],
        [when(referral.deadline_at)],
        [duration(now - Date.parse(referral.deadline_at)), "number"],
        [docsLinks(referral, ["view", "cancel"])],
      ];
    });
    var partial = listed.complete
      ? ""
      : "Only the " + listed.items.length + " requested referrals changed last were looked at.";
    return {
      state: overdue.length ? "ready" : "empty",
      message: overdue.length ? partial : "No referral is overdue. " + partial,
    };
  }

  async function unassignedReferrals(stale) {
    var listed = await allPages("queues/unassigned");
    if (stale()) return {};
    fillList("unassigned-table", "unassigned", listed.items, function (referral) {
      var reason = (referral.decision || {}).unassigned_reason;
      return [
        [referral.case_reference || referral.case_id],
        [referral.service_type],
        [referral.priority || ""],
        [when(referral.created_at)],
        [WHY_UNASSIGNED[reason] || reason || ""],
        [docsLinks(referral, ["assign", "view"])],
      ];
    });
    var partial = listed.complete ? "" : "Only the " + listed.items.length + " oldest are shown.";
    return {
      state: listed.items.length ? "ready" : "empty",
      message: listed.items.length ? partial : "No referral is waiting for an assignment.",
    };
  }

  // --- The page ------------------------------------------------------------------------

  /* The dates chosen, both included; `/indicators` takes the day after the last one. */
  function period() {
    var last = byId("to").value;
    var after = last ? new Date(last + "T00:00:00Z") : null;
    if (after) after.setUTCDate(after.getUTCDate() + 1);
    return { from: byId("from").value, last: last, to: after ? isoDate(after) : "" };
  }

  async function loadAll() {
    var mine = (generation += 1);
    var stale = function () {
      return mine !== generation;
    };
    var chosen = period();
    document.body.dataset.state = "loading";
    var results = await Promise.allSettled([
      section("by-status", stale, function () {
        return referralsByStatus(chosen, stale);
      }),
      section("acceptance", stale, function () {
        return timeToAcceptance(chosen, stale);
      }),
      section("gaps", stale, function () {
        return serviceGaps(stale);
      }),
      section("overdue", stale, overdueReferrals.bind(null, stale)),
      section("unassigned", stale, unassignedReferrals.bind(null, stale)),
    ]);
    if (stale()) return;
    var failed = results.filter(function (result) {
      return result.status === "rejected";
    });
    var refused = failed.filter(function (result) {
      return result.reason instanceof KeyRefused;
    });
    if (refused.length) {
      lock(refused[0].reason.message);
      return;
    }
    document.body.dataset.state = failed.length ? "error" : "ready";
  }

  function clearBoard() {
    ["chart-status", "chart-acceptance"].forEach(function (id) {
      clearChart(byId(id));
    });
    ["gaps-table", "overdue-table", "unassigned-table"].forEach(function (id) {
      var table = byId(id);
      table.replaceChild(document.createElement("tbody"), table.tBodies[0]);
    });
    gapRows = [];
  }

  function lock(message) {
    generation += 1;
    forgetKey();
    clearBoard();
    byId("board").hidden = true;
    byId("forget").hidden = true;
    byId("unlock").hidden = false;
    var error = byId("key-error");
    error.textContent = message || "";
    error.hidden = !message;
    document.body.dataset.state = message ? "refused" : "locked";
    byId("key").focus();
  }

  function unlock() {
    byId("unlock").hidden = true;
    byId("board").hidden = false;
    byId("forget").hidden = false;
    loadAll();
  }

  function start() {
    var today = new Date();
    var from = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - 11, 1));
    byId("from").value = isoDate(from);
    byId("to").value = isoDate(today);
    byId("period-note").textContent = "UTC dates; the last 12 months by default.";

    byId("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var input = byId("key");
      var key = input.value.trim();
      input.value = "";
      if (!key) return;
      try {
        window.sessionStorage.setItem(KEY_ITEM, key);
      } catch (error) {
        lock("This browser keeps nothing in session storage for this page: allow it and retry.");
        return;
      }
      unlock();
    });
    byId("forget").addEventListener("click", function () {
      lock("");
    });
    byId("period").addEventListener("submit", function (event) {
      event.preventDefault();
      if (period().from > period().last) {
        byId("period-note").textContent = "“From” must not be after “To”.";
        return;
      }
      byId("period-note").textContent = "UTC dates.";
      loadAll();
    });
    byId("gaps-filter").addEventListener("change", function () {
      if (gapRows.length) renderGaps();
    });

    if (storedKey()) unlock();
    else lock("");
  }

  start();
})();
