/*
 * topograph report: offline orbit viewer for a point cloud or height field.
 *
 * No external libraries and no network. Each element with [data-topograph-viewer] holds a
 * <script type="application/json"> data block written by topograph.report.html:
 *   {n, kind, unit, source, xyz (base64 float32 N*3), intensity (base64 float32 N | null),
 *    rgb (base64 uint8 N*3 | null), lo [3], hi [3], z_range [2]}
 * Drawing uses WebGL points when a WebGL context exists, otherwise a 2D canvas with a z-buffer
 * (open the report with "#renderer=2d" to force the latter).
 * After the first draw the canvas carries data-renderer and data-drawn-pixels (pixels that differ
 * from the background), which lets a headless browser check that something was drawn.
 * Controls: drag to rotate, wheel to zoom, double-click to reset; heights can be exaggerated (relief ×).
 */
(function () {
  "use strict";

  var BACKGROUND = [27, 30, 35];
  // Viridis, 9 stops (matplotlib), for colour by height.
  var VIRIDIS = [
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]
  ];

  function decodeBase64(text) {
    var bin = atob(text);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function viridis(t) {
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    var k = Math.min(VIRIDIS.length - 2, Math.floor(t));
    var f = t - k, a = VIRIDIS[k], b = VIRIDIS[k + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }

  function gradientCss() {
    var stops = VIRIDIS.map(function (c, i) {
      return "rgb(" + c.join(",") + ") " + Math.round((100 * i) / (VIRIDIS.length - 1)) + "%";
    });
    return "linear-gradient(to right, " + stops.join(", ") + ")";
  }

  function formatNumber(v) {
    if (!isFinite(v)) return "?";
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
  }

  // ---- 4x4 matrices, column-major (WebGL layout) -------------------------------------------
  function multiply(a, b) {
    var out = new Float32Array(16);
    for (var c = 0; c < 4; c++) {
      for (var r = 0; r < 4; r++) {
        var s = 0;
        for (var k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
        out[c * 4 + r] = s;
      }
    }
    return out;
  }

  function perspective(fovY, aspect, near, far) {
    var f = 1 / Math.tan(fovY / 2), nf = 1 / (near - far);
    return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0]);
  }

  function rotationX(a) {
    var c = Math.cos(a), s = Math.sin(a);
    return new Float32Array([1, 0, 0, 0, 0, c, s, 0, 0, -s, c, 0, 0, 0, 0, 1]);
  }

  function rotationZ(a) {
    var c = Math.cos(a), s = Math.sin(a);
    return new Float32Array([c, s, 0, 0, -s, c, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  }

  function scaling(x, y, z) {
    return new Float32Array([x, 0, 0, 0, 0, y, 0, 0, 0, 0, z, 0, 0, 0, 0, 1]);
  }

  function translation(x, y, z) {
    return new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, x, y, z, 1]);
  }

  // ---- data ----------------------------------------------------------------------------------
  function loadData(block) {
    var meta = JSON.parse(block.textContent);
    var lo = meta.lo, hi = meta.hi;
    var centre = [0, 1, 2].map(function (k) { return 0.5 * (lo[k] + hi[k]); });
    var radius = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2 || 1;
    if (meta.kind === "mesh") return loadMesh(meta, centre, radius);
    var raw = new Float32Array(decodeBase64(meta.xyz).buffer);
    var n = Math.floor(raw.length / 3);
    var xyz = new Float32Array(n * 3);
    for (var i = 0; i < n * 3; i++) xyz[i] = (raw[i] - centre[i % 3]) / radius;
    return {
      meta: meta,
      n: n,
      xyz: xyz,
      zRaw: raw,
      intensity: meta.intensity ? new Float32Array(decodeBase64(meta.intensity).buffer) : null,
      rgb: meta.rgb ? decodeBase64(meta.rgb) : null,
      indices: null
    };
  }

  // A height grid (rows x cols, NaN = no height) as vertices + two triangles per cell with four heights.
  function loadMesh(meta, centre, radius) {
    var g = meta.grid, rows = g.rows, cols = g.cols, cell = g.cell;
    var z = new Float32Array(decodeBase64(g.z).buffer);
    var gridRgb = g.rgb ? decodeBase64(g.rgb) : null;
    var index = new Int32Array(rows * cols), n = 0, r, c, k;
    for (k = 0; k < rows * cols; k++) index[k] = isFinite(z[k]) ? n++ : -1;
    var xyz = new Float32Array(n * 3), zRaw = new Float32Array(n * 3), rgb = gridRgb ? new Uint8Array(n * 3) : null;
    for (r = 0; r < rows; r++) {
      for (c = 0; c < cols; c++) {
        k = r * cols + c;
        var v = index[k];
        if (v < 0) continue;
        var p = [c * cell, -r * cell, z[k]];
        for (var a = 0; a < 3; a++) {
          zRaw[3 * v + a] = p[a];
          xyz[3 * v + a] = (p[a] - centre[a]) / radius;
          if (rgb) rgb[3 * v + a] = gridRgb[3 * k + a];
        }
      }
    }
    var tri = [];
    for (r = 0; r + 1 < rows; r++) {
      for (c = 0; c + 1 < cols; c++) {
        var i00 = index[r * cols + c], i01 = index[r * cols + c + 1];
        var i10 = index[(r + 1) * cols + c], i11 = index[(r + 1) * cols + c + 1];
        if (i00 >= 0 && i01 >= 0 && i10 >= 0 && i11 >= 0) tri.push(i00, i10, i01, i01, i10, i11);
      }
    }
    return {
      meta: meta, n: n, xyz: xyz, zRaw: zRaw, intensity: null, rgb: rgb,
      indices: n < 65536 ? new Uint16Array(tri) : new Uint32Array(tri),
      grid: { rows: rows, cols: cols, index: index }
    };
  }

  // Lambert shading of a mesh's vertex colours (light from the upper left, fixed to the object) with heights
  // scaled by the relief factor, so exaggerated relief also looks steeper.
  function shade(data, base, relief) {
    if (!data.grid) return base;
    var g = data.grid, rows = g.rows, cols = g.cols, idx = g.index, p = data.xyz;
    var out = new Uint8Array(base.length), L = [-0.45, 0.45, 0.77];
    function at(r, c) { return r >= 0 && r < rows && c >= 0 && c < cols ? idx[r * cols + c] : -1; }
    for (var r = 0; r < rows; r++) {
      for (var c = 0; c < cols; c++) {
        var v = idx[r * cols + c];
        if (v < 0) continue;
        var xl = at(r, c - 1), xr = at(r, c + 1), yu = at(r - 1, c), yd = at(r + 1, c);
        var a = xl >= 0 ? xl : v, b = xr >= 0 ? xr : v, u = yu >= 0 ? yu : v, d = yd >= 0 ? yd : v;
        var dx = p[3 * b] - p[3 * a], dzx = (p[3 * b + 2] - p[3 * a + 2]) * relief;
        var dy = p[3 * u + 1] - p[3 * d + 1], dzy = (p[3 * u + 2] - p[3 * d + 2]) * relief;
        var nx = dx ? -dzx / dx : 0, ny = dy ? -dzy / dy : 0, len = Math.sqrt(nx * nx + ny * ny + 1);
        var lambert = Math.max(0, (nx * L[0] + ny * L[1] + L[2]) / len);
        var f = 0.35 + 0.65 * lambert;
        for (var k = 0; k < 3; k++) out[3 * v + k] = Math.min(255, Math.round(base[3 * v + k] * f));
      }
    }
    return out;
  }

  function colours(data, mode) {
    var n = data.n, out = new Uint8Array(n * 3), i, c;
    if (mode === "rgb" && data.rgb) return data.rgb;
    if (mode === "intensity" && data.intensity) {
      for (i = 0; i < n; i++) {
        var g = Math.round(255 * Math.min(1, Math.max(0, data.intensity[i])));
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = g;
      }
      return out;
    }
    var z0 = data.meta.z_range[0], dz = data.meta.z_range[1] - z0 || 1;
    for (i = 0; i < n; i++) {
      c = viridis((data.zRaw[3 * i + 2] - z0) / dz);
      out[3 * i] = c[0];
      out[3 * i + 1] = c[1];
      out[3 * i + 2] = c[2];
    }
    return out;
  }

  // ---- renderers -------------------------------------------------------------------------------
  var VERTEX_SHADER =
    "attribute vec3 position; attribute vec3 colour; uniform mat4 transform; uniform float pointSize;" +
    "varying vec3 vColour;" +
    "void main() { gl_Position = transform * vec4(position, 1.0); gl_PointSize = pointSize; vColour = colour; }";
  var FRAGMENT_SHADER =
    "precision mediump float; varying vec3 vColour; void main() { gl_FragColor = vec4(vColour, 1.0); }";

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader) || "shader");
    return shader;
  }

  function webglRenderer(canvas, data) {
    var gl = canvas.getContext("webgl", { antialias: false });
    if (!gl) return null;
    var program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || "link");
    var positionBuffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, positionBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, data.xyz, gl.STATIC_DRAW);
    var colourBuffer = gl.createBuffer();
    var indexBuffer = null, indexType = null;
    if (data.indices) {
      if (data.indices instanceof Uint32Array && !gl.getExtension("OES_element_index_uint")) return null;
      indexType = data.indices instanceof Uint32Array ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT;
      indexBuffer = gl.createBuffer();
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indexBuffer);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, data.indices, gl.STATIC_DRAW);
    }
    var where = {
      position: gl.getAttribLocation(program, "position"),
      colour: gl.getAttribLocation(program, "colour"),
      transform: gl.getUniformLocation(program, "transform"),
      pointSize: gl.getUniformLocation(program, "pointSize")
    };
    return {
      name: "webgl",
      setColours: function (rgb) {
        gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
        gl.bufferData(gl.ARRAY_BUFFER, rgb, gl.STATIC_DRAW);
      },
      draw: function (transform, pointSize) {
        gl.viewport(0, 0, canvas.width, canvas.height);
        gl.clearColor(BACKGROUND[0] / 255, BACKGROUND[1] / 255, BACKGROUND[2] / 255, 1);
        gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
        gl.enable(gl.DEPTH_TEST);
        gl.useProgram(program);
        gl.bindBuffer(gl.ARRAY_BUFFER, positionBuffer);
        gl.enableVertexAttribArray(where.position);
        gl.vertexAttribPointer(where.position, 3, gl.FLOAT, false, 0, 0);
        gl.bindBuffer(gl.ARRAY_BUFFER, colourBuffer);
        gl.enableVertexAttribArray(where.colour);
        gl.vertexAttribPointer(where.colour, 3, gl.UNSIGNED_BYTE, true, 0, 0);
        gl.uniformMatrix4fv(where.transform, false, transform);
        gl.uniform1f(where.pointSize, pointSize);
        if (indexBuffer) {
          gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indexBuffer);
          gl.drawElements(gl.TRIANGLES, data.indices.length, indexType, 0);
        } else {
          gl.drawArrays(gl.POINTS, 0, data.n);
        }
      },
      // Call right after draw: the drawing buffer is still valid within the same task.
      pixels: function () {
        var buf = new Uint8Array(canvas.width * canvas.height * 4);
        gl.readPixels(0, 0, canvas.width, canvas.height, gl.RGBA, gl.UNSIGNED_BYTE, buf);
        return buf;
      }
    };
  }

  function canvas2dRenderer(canvas, data) {
    var ctx = canvas.getContext("2d");
    if (!ctx) return null;
    var rgb = null;
    var image = null, depth = null;
    return {
      name: "2d",
      setColours: function (c) { rgb = c; },
      draw: function (m, pointSize) {
        var w = canvas.width, h = canvas.height;
        if (!image || image.width !== w || image.height !== h) {
          image = ctx.createImageData(w, h);
          depth = new Float32Array(w * h);
        }
        var px = image.data, i, k;
        for (i = 0; i < w * h; i++) {
          px[4 * i] = BACKGROUND[0];
          px[4 * i + 1] = BACKGROUND[1];
          px[4 * i + 2] = BACKGROUND[2];
          px[4 * i + 3] = 255;
          depth[i] = Infinity;
        }
        var half = Math.floor(pointSize / 2), size = Math.max(1, Math.round(pointSize));
        var p = data.xyz;
        for (i = 0; i < data.n; i++) {
          var x = p[3 * i], y = p[3 * i + 1], z = p[3 * i + 2];
          var cw = m[3] * x + m[7] * y + m[11] * z + m[15];
          if (cw <= 1e-6) continue;
          var cx = (m[0] * x + m[4] * y + m[8] * z + m[12]) / cw;
          var cy = (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw;
          var sx = Math.round((cx * 0.5 + 0.5) * w) - half;
          var sy = Math.round((0.5 - cy * 0.5) * h) - half;
          for (var dy = 0; dy < size; dy++) {
            var yy = sy + dy;
            if (yy < 0 || yy >= h) continue;
            for (var dx = 0; dx < size; dx++) {
              var xx = sx + dx;
              if (xx < 0 || xx >= w) continue;
              k = yy * w + xx;
              if (cw >= depth[k]) continue;
              depth[k] = cw;
              px[4 * k] = rgb[3 * i];
              px[4 * k + 1] = rgb[3 * i + 1];
              px[4 * k + 2] = rgb[3 * i + 2];
            }
          }
        }
        ctx.putImageData(image, 0, 0);
      },
      pixels: function () { return ctx.getImageData(0, 0, canvas.width, canvas.height).data; }
    };
  }

  function countDrawn(pixels) {
    var count = 0;
    for (var i = 0; i < pixels.length; i += 4) {
      var d = Math.abs(pixels[i] - BACKGROUND[0]) + Math.abs(pixels[i + 1] - BACKGROUND[1]) +
        Math.abs(pixels[i + 2] - BACKGROUND[2]);
      if (d > 12) count++;
    }
    return count;
  }

  // ---- one viewer ------------------------------------------------------------------------------
  function setup(root) {
    var canvas = root.querySelector("canvas");
    var status = root.querySelector("[data-role=status]");
    var modeSelect = root.querySelector("[data-role=colour]");
    var sizeInput = root.querySelector("[data-role=point-size]");
    var reliefInput = root.querySelector("[data-role=relief]");
    var legend = root.querySelector("[data-role=legend]");
    var data = loadData(root.querySelector("script[type='application/json']"));
    var forced = /renderer=2d/.test(window.location.hash);
    var renderer = null;
    if (!forced) {
      try {
        renderer = webglRenderer(canvas, data);
      } catch (err) {
        renderer = null;
      }
    }
    if (!renderer) {
      // A canvas that already has a WebGL context cannot give a 2D one: use a fresh canvas.
      if (!forced && canvas.getContext("2d") === null) {
        var fresh = canvas.cloneNode(false);
        canvas.parentNode.replaceChild(fresh, canvas);
        canvas = fresh;
      }
      renderer = canvas2dRenderer(canvas, data);
    }
    canvas.setAttribute("data-renderer", renderer.name);

    // Flat scenes (a few µm of relief over mm) get their heights exaggerated to a quarter of the width.
    var lateral = Math.max(data.meta.hi[0] - data.meta.lo[0], data.meta.hi[1] - data.meta.lo[1]);
    var depth = data.meta.hi[2] - data.meta.lo[2];
    var autoRelief = depth > 0 ? Math.min(1000, Math.max(1, (0.25 * lateral) / depth)) : 1;
    var state = { yaw: -0.6, pitch: -0.9, zoom: 1, relief: autoRelief };
    var reliefLabel = root.querySelector("[data-role=relief-value]");

    function showRelief() {
      if (reliefLabel) reliefLabel.textContent = formatNumber(state.relief);
    }
    var initial = { yaw: state.yaw, pitch: state.pitch, zoom: state.zoom };
    var pending = false;

    function transform() {
      var aspect = canvas.width / canvas.height;
      var projection = perspective(Math.PI / 6, aspect, 0.05, 50);
      var view = translation(0, 0, -4.2 / state.zoom);
      var model = multiply(rotationX(state.pitch), multiply(rotationZ(state.yaw), scaling(1, 1, state.relief)));
      return multiply(projection, multiply(view, model));
    }

    function draw() {
      pending = false;
      renderer.draw(transform(), Number(sizeInput ? sizeInput.value : 2));
    }

    function schedule() {
      if (!pending) {
        pending = true;
        window.requestAnimationFrame(draw);
      }
    }

    function updateLegend(mode) {
      if (!legend) return;
      var unit = data.meta.unit ? " " + data.meta.unit : "";
      if (mode === "height") {
        legend.innerHTML = "";
        var lo = document.createElement("span");
        var bar = document.createElement("span");
        var hi = document.createElement("span");
        lo.textContent = formatNumber(data.meta.z_range[0]) + unit;
        hi.textContent = formatNumber(data.meta.z_range[1]) + unit;
        bar.className = "colourbar";
        bar.style.background = gradientCss();
        legend.appendChild(lo);
        legend.appendChild(bar);
        legend.appendChild(hi);
      } else {
        legend.textContent = mode === "intensity" ? "grey level = image intensity" : "colour = image colour";
      }
    }

    var currentMode = null;
    function setMode(mode) {
      currentMode = mode;
      renderer.setColours(shade(data, colours(data, mode), state.relief));
      updateLegend(mode);
    }

    setMode(modeSelect ? modeSelect.value : "height");
    draw();
    var drawn = countDrawn(renderer.pixels());
    canvas.setAttribute("data-drawn-pixels", String(drawn));
    canvas.setAttribute("data-points", String(data.n));
    var nTriangles = data.indices && renderer.name === "webgl" ? data.indices.length / 3 : 0;
    canvas.setAttribute("data-triangles", String(nTriangles));
    if (status) {
      var what = data.indices
        ? data.n + " vertices, " + data.indices.length / 3 + " triangles" + (nTriangles ? "" : " (drawn as points)")
        : data.n + " points";
      status.textContent = what + ", " + (renderer.name === "webgl" ? "WebGL" : "2D canvas") +
        " — drag to rotate, wheel to zoom, double-click to reset";
    }

    if (modeSelect) modeSelect.addEventListener("change", function () { setMode(modeSelect.value); schedule(); });
    if (sizeInput) sizeInput.addEventListener("input", schedule);
    if (reliefInput) {
      // The slider is log10 of the factor.
      reliefInput.value = String(Math.log(state.relief) / Math.LN10);
      reliefInput.addEventListener("input", function () {
        state.relief = Math.pow(10, Number(reliefInput.value));
        showRelief();
        if (data.grid) setMode(currentMode);
        schedule();
      });
    }
    showRelief();

    var drag = null;
    canvas.addEventListener("pointerdown", function (e) {
      drag = { x: e.clientX, y: e.clientY };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!drag) return;
      state.yaw += (e.clientX - drag.x) * 0.01;
      state.pitch = Math.max(-Math.PI, Math.min(0, state.pitch + (e.clientY - drag.y) * 0.01));
      drag = { x: e.clientX, y: e.clientY };
      schedule();
    });
    canvas.addEventListener("pointerup", function () { drag = null; });
    canvas.addEventListener("pointercancel", function () { drag = null; });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      state.zoom = Math.max(0.2, Math.min(20, state.zoom * Math.exp(-e.deltaY * 0.001)));
      schedule();
    }, { passive: false });
    canvas.addEventListener("dblclick", function () {
      state.yaw = initial.yaw;
      state.pitch = initial.pitch;
      state.zoom = initial.zoom;
      state.relief = autoRelief;
      if (reliefInput) reliefInput.value = String(Math.log(autoRelief) / Math.LN10);
      showRelief();
      schedule();
    });
  }

  // ---- line profile on the height map ----------------------------------------------------------
  // The profile reads the mesh's height grid; the reader clicks a start and an end point on the map.
  function escapeText(text) {
    return String(text).replace(/[&<>"]/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch];
    });
  }

  // An SVG element as markup (the HTML parser puts inline <svg> into the SVG namespace by itself).
  function svgTag(name, attrs, text) {
    var out = "<" + name;
    for (var k in attrs) out += " " + k + '="' + escapeText(attrs[k]) + '"';
    return text === undefined ? out + "/>" : out + ">" + escapeText(text) + "</" + name + ">";
  }

  function setupProfile(root) {
    var block = document.querySelector("[data-topograph-viewer] script[type='application/json']");
    if (!block) return;
    var meta = JSON.parse(block.textContent);
    if (meta.kind !== "mesh") return;
    var g = meta.grid, rows = g.rows, cols = g.cols;
    var z = new Float32Array(decodeBase64(g.z).buffer);
    var box = root.querySelector(".map"), img = box.querySelector("img"), overlay = box.querySelector("canvas");
    var chart = root.querySelector("[data-role=chart]"), status = root.querySelector("[data-role=profile-status]");
    var scale = 4;
    overlay.width = cols * scale;
    overlay.height = rows * scale;
    var ctx = overlay.getContext("2d");
    var pending = null;

    function height(c, r) {
      var ci = Math.round(c), ri = Math.round(r);
      if (ci < 0 || ci >= cols || ri < 0 || ri >= rows) return NaN;
      return z[ri * cols + ci];
    }

    function marker(p, colour) {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc((p[0] + 0.5) * scale, (p[1] + 0.5) * scale, 2.5 * scale, 0, 2 * Math.PI);
      ctx.fill();
    }

    function drawLine(a, b) {
      ctx.clearRect(0, 0, overlay.width, overlay.height);
      ctx.lineWidth = 2.5 * scale / 2;
      ctx.strokeStyle = "rgba(0,0,0,0.8)";
      ctx.beginPath();
      ctx.moveTo((a[0] + 0.5) * scale, (a[1] + 0.5) * scale);
      ctx.lineTo((b[0] + 0.5) * scale, (b[1] + 0.5) * scale);
      ctx.stroke();
      ctx.lineWidth = scale / 2;
      ctx.strokeStyle = "#ff5252";
      ctx.stroke();
      marker(a, "#ffffff");
      marker(b, "#ff5252");
    }

    function drawChart(d, h, unit, lateral) {
      var W = 560, H = 230, left = 58, right = 12, top = 12, bottom = 38;
      var pw = W - left - right, ph = H - top - bottom;
      var finite = h.filter(function (v) { return isFinite(v); });
      var lo = Math.min.apply(null, finite), hi = Math.max.apply(null, finite);
      if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
      var dmax = d[d.length - 1] || 1;
      var parts = [];
      parts.push(svgTag("rect", { x: left, y: top, width: pw, height: ph, fill: "#fff", stroke: "#ccd" }));
      var path = "", pen = false;
      for (var i = 0; i < d.length; i++) {
        if (!isFinite(h[i])) { pen = false; continue; }
        var x = left + (pw * d[i]) / dmax, y = top + ph - (ph * (h[i] - lo)) / (hi - lo);
        path += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
        pen = true;
      }
      parts.push(svgTag("path", { d: path, fill: "none", stroke: "#2c718e", "stroke-width": "1.6" }));
      parts.push(svgTag("text", { x: left - 6, y: top + 10, "text-anchor": "end" }, formatNumber(hi)));
      parts.push(svgTag("text", { x: left - 6, y: top + ph, "text-anchor": "end" }, formatNumber(lo)));
      parts.push(svgTag("text", { x: left, y: top + ph + 14, "text-anchor": "middle" }, "0"));
      parts.push(svgTag("text", { x: left + pw, y: top + ph + 14, "text-anchor": "end" }, formatNumber(dmax)));
      parts.push(svgTag("text", { x: left + pw / 2, y: H - 6, "text-anchor": "middle" },
        "distance along the line (" + lateral + ")"));
      parts.push(svgTag("text", { x: 12, y: top + ph / 2, "text-anchor": "middle",
        transform: "rotate(-90 12 " + (top + ph / 2) + ")" }, "height (" + unit + ")"));
      chart.innerHTML = '<svg data-role="profile-svg" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + " " +
        H + '" font-size="11" font-family="sans-serif">' + parts.join("") + "</svg>";
      return finite.length;
    }

    function show(a, b) {
      var len = Math.sqrt((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1]));
      var n = Math.max(2, Math.ceil(2 * len) + 1), d = [], h = [];
      for (var i = 0; i < n; i++) {
        var t = i / (n - 1);
        d.push(t * len * g.cell);
        h.push(height(a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])));
      }
      drawLine(a, b);
      var count = drawChart(d, h, g.unit || "", g.lateral_unit);
      root.setAttribute("data-profile-samples", String(count));
      var finite = h.filter(function (v) { return isFinite(v); });
      var range = finite.length ? Math.max.apply(null, finite) - Math.min.apply(null, finite) : NaN;
      status.textContent = "profile of " + formatNumber(len * g.cell) + " " + g.lateral_unit + ", height range " +
        formatNumber(range) + " " + (g.unit || "") + " — click two points on the map to move it";
    }

    box.addEventListener("click", function (e) {
      var rect = img.getBoundingClientRect();
      var p = [((e.clientX - rect.left) / rect.width) * cols - 0.5, ((e.clientY - rect.top) / rect.height) * rows - 0.5];
      if (!pending) {
        pending = p;
        ctx.clearRect(0, 0, overlay.width, overlay.height);
        marker(p, "#ffffff");
        status.textContent = "now click the end point of the profile";
      } else {
        show(pending, p);
        pending = null;
      }
    });
    // Start with the row through the middle of the map, across its whole width.
    var mid = Math.floor(rows / 2);
    show([0, mid], [cols - 1, mid]);
  }

  var profiles = document.querySelectorAll("[data-topograph-profile]");
  for (var j = 0; j < profiles.length; j++) {
    try {
      setupProfile(profiles[j]);
    } catch (err) {
      var ps = profiles[j].querySelector("[data-role=profile-status]");
      if (ps) ps.textContent = "line profile unavailable: " + err.message;
      throw err;
    }
  }

  var roots = document.querySelectorAll("[data-topograph-viewer]");
  for (var i = 0; i < roots.length; i++) {
    try {
      setup(roots[i]);
    } catch (err) {
      var s = roots[i].querySelector("[data-role=status]");
      if (s) s.textContent = "3D view unavailable: " + err.message;
      throw err;
    }
  }
})();
