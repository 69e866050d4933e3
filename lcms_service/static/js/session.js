// What the views share: the signed-in user, the projects the service publishes, and an event bus
// ("decided": a decision was saved, so maps showing change polygons refetch them).

export const session = {
  user: null, // {name, role, csrf_token}
  projects: [],
  bus: new EventTarget(),
  changesRevision: 0,
};

const RANKS = { viewer: 1, validator: 2, admin: 3 };

/** Whether the signed-in user's role is at least `role` (admin ⊇ validator ⊇ viewer). */
export function hasRole(role) {
  return Boolean(session.user) && (RANKS[session.user.role] || 0) >= (RANKS[role] || 99);
}

export function project(name) {
  return session.projects.find((p) => p.project === name) || session.projects[0] || null;
}

/** The seasons of `p` in order, the published ones only unless `all`. */
export function seasonsOf(p, { all = false } = {}) {
  const seasons = (p && p.seasons) || [];
  return seasons.filter((s) => all || s.published !== false).sort((a, b) => String(a.id).localeCompare(String(b.id)));
}

export function noteDecision(change) {
  session.changesRevision += 1;
  session.bus.dispatchEvent(new CustomEvent("decided", { detail: change }));
}
