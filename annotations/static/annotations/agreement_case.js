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
