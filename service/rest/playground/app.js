// clipserve playground: plain JavaScript over the server's public REST API, no framework, no build step.
// URLs are relative to the page, so the page works under a proxy's path prefix too.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { images: [], models: [], apiKey: "" };  // images: {name, url, base64}

  // --- API calls -------------------------------------------------------------------------------------

  class ApiError extends Error {}

  // The API's error body is {"error": {"type", "message"}}; anything else is shown as it came.
  async function describeFailure(method, path, response) {
    const text = await response.text();
    let detail = text.slice(0, 500) || response.statusText;
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) {
        detail = `${body.error.type ? body.error.type + ": " : ""}${body.error.message}`;
      }
    } catch (_) { /* not JSON: shown as text */ }
    const retry = response.headers.get("retry-after");
    return `${method} /${path} failed (HTTP ${response.status}): ${detail}${retry ? ` (retry after ${retry} s)` : ""}`;
  }

  // One call: resolves to {body, ms}; rejects with an ApiError that says what went wrong.
  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.apiKey) headers["X-API-Key"] = state.apiKey;
    const begin = performance.now();
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(`${method} /${path}: the server did not answer (${err.message})`);
    }
    const ms = performance.now() - begin;
    if (!response.ok) {
      const error = new ApiError(await describeFailure(method, path, response));
      error.status = response.status;
      throw error;
    }
    return { body: await response.json(), ms };
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
    if (message) box.scrollIntoView({ block: "nearest" });
  }

  // --- Models, label sets, API key ------------------------------------------------------------------

  async function loadModels() {
    try {
      const { body } = await api("GET", "models");
      state.models = body.data;
      $("key-section").hidden = !state.apiKey;  // stays shown once a key was needed
      showError("");
    } catch (err) {
      if (err.status === 401) {
        $("key-section").hidden = false;
        $("model").innerHTML = "<option>needs an API key</option>";
        showError(state.apiKey ? "That API key was refused." : "This server needs an API key: enter it above.");
        $("api-key").focus();
        return;
      }
      showError(err.message);
      return;
    }
    const select = $("model");
    select.replaceChildren(...state.models.map((m) => new Option(m.id + (m.default ? " (default)" : ""), m.id)));
    select.disabled = state.models.length < 2;
    showModelInfo();
  }

  function showModelInfo() {
    const model = state.models.find((m) => m.id === $("model").value);
    $("model-info").textContent = model
      ? `${model.dimension}-d embeddings · ${model.image_size} px · ${model.backend} ${model.precision}` : "";
  }

  // The first enum of a "label_set" property anywhere in a JSON schema, or [].
  function labelSetEnum(schema) {
    if (!schema || typeof schema !== "object") return [];
    const own = schema.properties && schema.properties.label_set;
    if (own && Array.isArray(own.enum)) return own.enum;
    for (const child of Object.values(schema)) {
      const found = labelSetEnum(child);
      if (found.length) return found;
    }
    return [];
  }

  // The built-in label sets: the OpenAPI document's enum for /classify's label_set.
  async function loadLabelSets() {
    let names = [];
    try {
      const { body } = await api("GET", "openapi.json");
      names = labelSetEnum(body.components.schemas.ClassifyRequest);
    } catch (_) { return; /* no label sets offered: typed labels still work */ }
    $("label-set").append(...names.map((n) => new Option(n, n)));
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    loadModels();
  });
  $("model").addEventListener("change", showModelInfo);
  // A label set replaces the typed labels: say so by disabling them.
  $("label-set").addEventListener("change", () => { $("labels").disabled = Boolean($("label-set").value); });

  // --- Images ---------------------------------------------------------------------------------------

  function readImage(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);  // data URI -> its base64
      reader.onerror = () => reject(new Error(`could not read ${file.name}`));
      reader.readAsDataURL(file);
    });
  }

  async function addFiles(fileList) {
    const files = [...fileList].filter((f) => f.type.startsWith("image/") || f.type === "");
    for (const file of files) {
      try {
        state.images.push({ name: file.name, url: URL.createObjectURL(file), base64: await readImage(file) });
      } catch (err) {
        showError(err.message);
      }
    }
    renderThumbs();
  }

  function renderThumbs() {
    const items = state.images.map((image, i) => {
      const li = document.createElement("li");
      const img = new Image();
      img.src = image.url;
      img.alt = image.name;
      img.title = image.name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${image.name}`);
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(image.url);
        state.images.splice(i, 1);
        renderThumbs();
      });
      li.append(img, remove);
      return li;
    });
    $("thumbs").replaceChildren(...items);
  }

  $("files").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";  // the same file can be chosen again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });

  // --- Shared helpers for the two views -------------------------------------------------------------

  // One per line; a single line is split at commas.
  function splitList(text) {
    const lines = text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
    const items = lines.length === 1 ? lines[0].split(",") : lines;
    return items.map((s) => s.trim()).filter(Boolean);
  }

  function modelField() {
    const model = $("model").value;
    return state.models.some((m) => m.id === model) ? { model } : {};
  }

  // Runs one call for a form's button: disables it meanwhile, shows the latency or the error.
  async function run(button, latency, path, body, render) {
    const names = state.images.map((im) => im.name);  // as sent: the API names an image by its index
    showError("");
    button.disabled = true;
    latency.textContent = "working…";
    try {
      const { body: answer, ms } = await api("POST", path, body);
      latency.textContent = `POST /${path} · ${answer.model} · ${ms.toFixed(0)} ms`;
      render(answer);
    } catch (err) {
      latency.textContent = "";
      showError(err.message.replace(/images\[(\d+)\]/g, (m, i) => (names[i] ? `${m} (${names[i]})` : m)));
    } finally {
      button.disabled = false;
    }
  }

  function needImages() {
    if (state.images.length) return true;
    showError("Choose or drop at least one image first.");
    return false;
  }

  // --- Classify -------------------------------------------------------------------------------------

  function renderClassification(answer) {
    const cards = answer.results.map((result, i) => {
      const image = state.images[i];
      const card = document.createElement("article");
      card.className = "result";
      const img = new Image();
      img.src = image.url;
      img.alt = image.name;
      const body = document.createElement("div");
      body.style.flex = "1";
      body.style.minWidth = "0";
      const name = document.createElement("p");
      name.className = "name";
      name.textContent = image.name;
      const bars = document.createElement("ol");
      bars.className = "bars";
      bars.setAttribute("aria-label", `Top labels for ${image.name}`);
      for (const { label, score } of result.labels) {
        const row = document.createElement("li");
        row.className = "bar-row";
        row.innerHTML = '<span class="label"></span><span class="track"><span class="bar"></span></span>'
          + '<span class="score"></span>';
        row.querySelector(".label").textContent = label;
        row.querySelector(".label").title = label;
        // The page asks for probabilities: a bar is the label's share of the whole.
        row.querySelector(".bar").style.width = `${Math.min(100, Math.max(0, 100 * score)).toFixed(1)}%`;
        row.querySelector(".bar").style.display = "block";
        row.querySelector(".score").textContent = score.toFixed(3);
        bars.append(row);
      }
      body.append(name, bars);
      card.append(img, body);
      return card;
    });
    $("classify-results").replaceChildren(...cards);
  }

  $("classify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!needImages()) return;
    const labelSet = $("label-set").value;
    const labels = splitList($("labels").value);
    if (!labelSet && !labels.length) {
      showError("Type some labels, or choose a built-in label set.");
      return;
    }
    const body = {
      ...modelField(), images: state.images.map((im) => im.base64), top_k: Number($("top-k").value) || 5,
      ...(labelSet ? { label_set: labelSet } : { labels }),
    };
    if (!labelSet) body.top_k = Math.min(body.top_k, labels.length);
    run($("classify-run"), $("classify-latency"), "classify", body, renderClassification);
  });

  // --- Similarity -----------------------------------------------------------------------------------

  // White to the accent blue; dark cells get white text.
  function heat(t) {
    const mix = (a, b) => Math.round(a + (b - a) * t);
    return { background: `rgb(${mix(247, 31)}, ${mix(250, 84)}, ${mix(255, 196)})`, ink: t > 0.55 ? "#fff" : "#1d2430" };
  }

  function renderMatrix(answer, texts) {
    const kind = $("score").value;
    const rows = answer[kind];
    const values = rows.flat();
    const [low, high] = kind === "probabilities" ? [0, 1] : [Math.min(...values), Math.max(...values)];
    const table = $("matrix");
    const head = document.createElement("thead");
    const headRow = head.insertRow();
    headRow.append(Object.assign(document.createElement("th"), { textContent: "" }));
    for (const text of texts) {
      headRow.append(Object.assign(document.createElement("th"), { scope: "col", textContent: text }));
    }
    const body = document.createElement("tbody");
    rows.forEach((row, i) => {
      const tr = body.insertRow();
      const th = Object.assign(document.createElement("th"), { scope: "row" });
      th.append(Object.assign(new Image(), { src: state.images[i].url, alt: state.images[i].name,
        title: state.images[i].name }));
      tr.append(th);
      row.forEach((value, j) => {
        const td = tr.insertCell();
        const colors = heat(high > low ? (value - low) / (high - low) : 0.5);
        td.className = "cell";
        td.textContent = value.toFixed(3);
        td.dataset.value = String(value);
        td.style.background = colors.background;
        td.style.color = colors.ink;
        td.title = `${state.images[i].name} × ${texts[j]}: ${value}`;
      });
    });
    const caption = document.createElement("caption");
    caption.className = "visually-hidden";
    caption.textContent = `${kind === "cosine" ? "Cosine similarity" : "Probability"} of each image (rows) `
      + "and text (columns)";
    table.replaceChildren(caption, head, body);
    table.hidden = false;
  }

  $("similarity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!needImages()) return;
    const texts = splitList($("texts").value);
    if (!texts.length) {
      showError("Type at least one text.");
      return;
    }
    const body = { ...modelField(), images: state.images.map((im) => im.base64), texts };
    run($("similarity-run"), $("similarity-latency"), "similarity", body, (answer) => {
      state.lastSimilarity = { answer, texts };
      renderMatrix(answer, texts);
    });
  });
  $("score").addEventListener("change", () => {
    if (state.lastSimilarity) renderMatrix(state.lastSimilarity.answer, state.lastSimilarity.texts);
  });

  // --- Tabs -----------------------------------------------------------------------------------------

  const tabs = [$("tab-classify"), $("tab-similarity")];
  function select(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  }
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const next = tabs[(i + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      select(next);
      next.focus();
    });
  });

  loadModels();
  loadLabelSets();
})();
