// The agreement case view: zoom a panel to full resolution, and (admins) adopt a reader's mask or the
// consensus as the adjudicated revision.

import { post } from "./api.js";
import { notice } from "./dom.js";

const box = document.querySelector(".case-panels");
const caseId = box.dataset.case;

for (const img of box.querySelectorAll("img.zoomable")) {
  const toggle = () => img.classList.toggle("zoomed");
  img.onclick = toggle;
  img.onkeydown = (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } };
}

for (const b of box.querySelectorAll("button.adopt")) {
  b.onclick = async () => {
    if (!window.confirm(`Adopt revision ${b.dataset.revision} as the adjudicated mask of case ${caseId}?`)) return;
    try {
      await post(`/api/v1/cases/${caseId}/adjudicate`, { revision: Number(b.dataset.revision) });
      window.location.reload();
    } catch (e) { notice(e.message); }
  };
}

// The readers' agreement on the whole volume (GET /cases/{id}/volume/agreement): distances in mm on the
// volume's spacing, over the longest run of slices every reader labelled.
const volume = document.getElementById("volume-agreement");
if (volume) {
  const status = volume.querySelector("#volume-agreement-status");
  const fmt = (v) => (v == null ? "—" : Number(v).toFixed(3));
  fetch(`/api/v1/cases/${caseId}/volume/agreement`, { credentials: "same-origin" }).then(async (resp) => {
    if (!resp.ok) { status.textContent = "Not yet: no two readers have labelled the same slices of this volume."; return; }
    const a = await resp.json();
    const m = a.metrics;
    status.textContent = `Slices ${a.slices[0] + 1}–${a.slices[1] + 1} (${a.shared_slices} labelled by every reader),`
      + ` spacing ${a.spacing_mm.map((v) => v.toFixed(2)).join(" × ")} mm; kappa ${fmt(m.kappa)} (${m.kappa_method}, background of the labels' box);`
      + ` STAPLE sensitivity ${m.staple_sensitivity.map(fmt).join(", ")}.`;
    const body = volume.querySelector("tbody");
    for (const p of m.pairs) {
      const tr = document.createElement("tr");
      for (const v of [`${a.readers[p.reader_a]} · ${a.readers[p.reader_b]}`, fmt(p.dice), fmt(p.iou), fmt(p.hd95), fmt(p.assd), fmt(p.surface_dice)]) {
        const td = document.createElement("td"); td.textContent = v; tr.append(td);
      }
      body.append(tr);
    }
    volume.querySelector("table").hidden = false;
  }).catch((e) => { status.textContent = `Could not measure: ${e.message}`; });
}
