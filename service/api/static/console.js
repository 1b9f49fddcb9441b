// Sandbox console: load patients, fire patient-view through the console backend, show the result.
"use strict";
(function () {
  const form = document.getElementById("console-form");
  if (!form) { return; }
  const patientSelect = document.getElementById("patient");
  const builtinOptions = Array.from(patientSelect.options).map(function (o) { return [o.value, o.text]; });
  const status = document.getElementById("status");
  const fireButton = document.getElementById("fire");

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function source() {
    return form.querySelector("input[name=source]:checked").value;
  }

  function fillPatients(items) {
    patientSelect.replaceChildren();
    items.forEach(function (item) {
      const option = document.createElement("option");
      option.value = item[0];
      option.textContent = item[1];
      patientSelect.appendChild(option);
    });
  }

  async function loadPatients() {
    const server = document.getElementById("fhir-server").value.trim();
    say("Loading patients from " + server + " ...");
    try {
      const url = form.dataset.patientsUrl + "?fhir_server=" + encodeURIComponent(server);
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      const data = await response.json();
      if (!response.ok) { throw new Error(data.error || (data.issue && data.issue[0].diagnostics) || response.status); }
      fillPatients(data.patients.map(function (p) { return [p.id, p.id + " — " + p.label]; }));
      document.getElementById("source-fhir").checked = true;
      say(data.patients.length + " patients loaded.");
    } catch (error) {
      say("Could not load patients: " + error.message, true);
    }
  }

  form.querySelectorAll("input[name=source]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (source() === "builtin") { fillPatients(builtinOptions); say(""); } else { loadPatients(); }
    });
  });
  document.getElementById("load-patients").addEventListener("click", loadPatients);

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const server = document.getElementById("fhir-server").value.trim();
    const payload = {
      source: source(),
      patient_id: patientSelect.value,
      prefetch: form.querySelector("input[name=prefetch]:checked").value,
      fhir_server: server || null,
    };
    fireButton.disabled = true;
    say("Calling patient-view for " + payload.patient_id + " ...");
    try {
      const response = await fetch(form.dataset.fireUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(payload),
      });
      const data = await response.json();
      if (!response.ok) {
        throw new Error((data.issue && data.issue[0].diagnostics) || ("HTTP " + response.status));
      }
      document.getElementById("cards").innerHTML = data.cards_html;
      document.getElementById("timing").textContent = "(" + data.elapsed_ms + " ms)";
      document.getElementById("request-json").textContent = JSON.stringify(data.request, null, 2);
      document.getElementById("response-status").textContent = "HTTP " + data.status;
      document.getElementById("response-json").textContent = JSON.stringify(data.response, null, 2);
      const count = (data.response && data.response.cards) ? data.response.cards.length : 0;
      let message = "HTTP " + data.status + ": " + count + " card" + (count === 1 ? "" : "s") + " in " + data.elapsed_ms + " ms.";
      if (data.notes.length) { message += " " + data.notes.join("; "); }
      say(message, data.status !== 200);
    } catch (error) {
      say("The call failed: " + error.message, true);
    } finally {
      fireButton.disabled = false;
    }
  });
})();
