/* Compose page: live characters, encoding and SMS count per language, the letters that
   force UCS-2 with their GSM-safe replacement, the recipient count and the cost.
   The tables come from the server (gateway/text/encoding.py, client_rules) in data-config;
   tests/browser/test_counter.py runs the same texts through this and through Python. */
(function () {
  "use strict";
  var form = document.querySelector("[data-compose]");
  if (!form) return;
  var cfg = JSON.parse(form.getAttribute("data-config"));
  var R = cfg.rules;
  var BASIC = new Set(Array.from(R.basic));
  var EXT = new Set(Array.from(R.extension));
  var NUMERO = new RegExp(R.numero.pattern, "gu");
  var own = Object.prototype.hasOwnProperty;

  function map(text, table) {
    var out = "";
    for (var ch of text) out += own.call(table, ch) ? table[ch] : ch;
    return out;
  }
  function transliterate(text, lang) {
    text = text.normalize("NFC");
    var L = R.languages[lang];
    if (L) {
      var drop = new Set(L.drop);
      text = Array.from(text.normalize("NFD")).filter(function (c) { return !drop.has(c); })
        .join("").normalize("NFC");
      text = map(text, L.map);
    }
    return map(text.replace(NUMERO, R.numero.replacement), R.common);
  }
  function isGsm(ch) { return BASIC.has(ch) || EXT.has(ch); }
  function measure(text, lang, translit) {
    var original = text.normalize("NFC");
    var sent = translit ? transliterate(original, lang) : original;
    var chars = Array.from(sent), length, segments, encoding;
    if (chars.every(isGsm)) {
      encoding = "GSM-7";
      length = chars.reduce(function (n, c) { return n + (EXT.has(c) ? 2 : 1); }, 0);
      segments = 1;
      if (length > R.single["GSM-7"]) {
        var used = 0;
        chars.forEach(function (c) {
          var w = EXT.has(c) ? 2 : 1;
          if (used + w > R.part["GSM-7"]) { segments += 1; used = 0; }
          used += w;
        });
      }
    } else {
      encoding = "UCS-2";
      length = sent.length;
      segments = length <= R.single["UCS-2"] ? 1 : Math.ceil(length / R.part["UCS-2"]);
    }
    var letters = [];
    for (var ch of original) {
      if (!isGsm(ch) && !letters.some(function (l) { return l[0] === ch; })) {
        letters.push([ch, transliterate(ch, lang)]);
      }
    }
    return { text: sent, encoding: encoding, length: length, segments: segments,
             letters: letters };
  }
  window.DannayaText = { measure: measure, transliterate: transliterate };

  var translit = form.querySelector("[data-translit]");
  var boxes = Array.from(form.querySelectorAll("[data-message]"));
  var recipients = null;  // by language, from the server
  var price = parseFloat(cfg.price) || 0;

  function fmt(n) {
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    e.textContent = text;
    return e;
  }
  function show(box) {
    var lang = box.getAttribute("data-message");
    var text = box.querySelector("textarea").value;
    var m = measure(text, lang, translit ? translit.checked : true);
    box.querySelector("[data-chars]").textContent = fmt(m.length);
    var enc = box.querySelector("[data-encoding]");
    enc.textContent = m.encoding;
    enc.classList.toggle("enc-ucs2", m.encoding !== "GSM-7");
    box.querySelector("[data-segments]").textContent = text ? m.segments : 0;
    var list = box.querySelector("[data-letter-list]");
    list.textContent = "";
    m.letters.forEach(function (l) {
      var chip = el("span", m.encoding === "GSM-7" ? "chip ok" : "chip bad", "");
      chip.appendChild(el("mark", "", l[0]));
      chip.appendChild(document.createTextNode(" → " + (l[1] || "∅")));
      list.appendChild(chip);
    });
    var letters = box.querySelector("[data-letters]");
    letters.hidden = m.letters.length === 0;
    box.querySelector("[data-letters-label]").textContent =
      letters.getAttribute(m.encoding === "GSM-7" ? "data-on" : "data-off");
    var preview = box.querySelector("[data-preview]");
    preview.textContent = "";
    Array.from(m.text).forEach(function (c) {
      preview.appendChild(isGsm(c) ? document.createTextNode(c) : el("mark", "", c));
    });
    preview.hidden = m.letters.length === 0 || m.encoding === "GSM-7";
    return text ? m.segments : 0;
  }
  function update() {
    var segs = {};
    boxes.forEach(function (box) { segs[box.getAttribute("data-message")] = show(box); });
    var cost = form.querySelector("[data-cost]");
    if (!recipients || !price) { cost.textContent = "—"; return; }
    var total = 0;
    Object.keys(recipients).forEach(function (lang) {
      var s = segs[lang] || segs[cfg.default_language] || 0;
      total += recipients[lang] * s;
    });
    cost.textContent = fmt(total * price);
  }

  var timer = null, asked = 0;
  function count() {
    var params = new URLSearchParams();
    form.querySelectorAll("input[name=cercle]:checked, input[name=commune]:checked, " +
                          "input[name=language]:checked").forEach(function (i) {
      params.append(i.name, i.value);
    });
    var mine = ++asked;
    fetch(cfg.recipients_url + "?" + params.toString(),
          { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (d) {
        if (mine !== asked) return;
        recipients = d.languages;
        form.querySelector("[data-recipients]").textContent = fmt(d.recipients);
        var detail = form.querySelector("[data-by-language]");
        var names = JSON.parse(detail.getAttribute("data-names"));
        detail.textContent = Object.keys(d.languages).sort().map(function (k) {
          return (names[k] || k) + " " + fmt(d.languages[k]);
        }).join(" · ");
        update();
      })
      .catch(function () { if (mine === asked) recipients = null; update(); });
  }
  form.addEventListener("input", function (e) {
    if (e.target.tagName === "TEXTAREA") update();
  });
  form.addEventListener("change", function (e) {
    var name = e.target.name;
    if (name === "cercle" || name === "commune" || name === "language") {
      clearTimeout(timer);
      timer = setTimeout(count, 250);
    } else if (e.target === translit) {
      update();
    }
  });
  update();
  count();
})();
