//! Draws the `winston status` view from a [`TenantView`] snapshot: a table
//! of tenants, or one tenant in detail with each instance's steps (state,
//! attempts, durations, messages), URLs, the credentials Secret's name and
//! the credits. Pure: `now` and the colour switch come from the caller, so
//! the output is a function of its inputs (and unit-tested as such). Never
//! prints a secret: only names of Secrets, which status holds.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::format::{self, Style, Tone};
use super::model::TenantView;
use crate::api::conditions::{find, is_true};
use crate::api::tenant_instance::{StepState, StepStatus};
use crate::api::time;
use crate::api::{Phase, TenantInstance};
use crate::names;

const BAR_WIDTH: usize = 8;

/// All tenants as a table; with `show_namespace` a NAMESPACE column leads.
#[must_use]
pub fn table(views: &[TenantView], show_namespace: bool, now: DateTime<Utc>, style: Style) -> String {
    let mut header = vec!["TENANT", "PLAN", "PHASE", "READY", "PROGRESS", "CREDITS", "URL", "AGE"];
    if show_namespace {
        header.insert(0, "NAMESPACE");
    }
    let mut rows: Vec<Vec<(String, Tone)>> = Vec::new();
    for v in views {
        let (phase, tone) = tenant_phase(v);
        let (done, total) = progress(&v.instances);
        let mut row = vec![
            (v.tenant.name_any(), Tone::Strong),
            (v.tenant.spec.stack.plan.clone(), Tone::Plain),
            (phase, tone),
            (ready_instances(v), Tone::Plain),
            (
                if total == 0 { "-".into() } else { format!("{} {done}/{total}", format::bar(done, total, BAR_WIDTH)) },
                tone,
            ),
            credit_cell(v),
            (tenant_url(v).unwrap_or_else(|| "-".into()), Tone::Plain),
            (
                v.tenant.metadata.creation_timestamp.as_ref().map_or("-".into(), |t| format::age(timestamp(t), now)),
                Tone::Plain,
            ),
        ];
        if show_namespace {
            row.insert(0, (v.tenant.namespace().unwrap_or_default(), Tone::Plain));
        }
        rows.push(row);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| format::width(h)).collect();
    for row in &rows {
        for (i, (cell, _)) in row.iter().enumerate() {
            widths[i] = widths[i].max(format::width(cell));
        }
    }
    let mut out = String::new();
    let last = header.len() - 1;
    let line: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| if i == last { (*h).to_string() } else { format::pad(h, widths[i]) })
        .collect();
    out.push_str(&style.paint(Tone::Quiet, &line.join("  ")));
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, (c, t))| style.paint(*t, &if i == last { c.clone() } else { format::pad(c, widths[i]) }))
            .collect();
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    out
}

/// One tenant in detail.
#[must_use]
pub fn detail(v: &TenantView, now: DateTime<Utc>, style: Style) -> String {
    let t = &v.tenant;
    let (phase, tone) = tenant_phase(v);
    let mut out = String::new();
    let age = t.metadata.creation_timestamp.as_ref().map_or("-".into(), |ts| format::age(timestamp(ts), now));
    out.push_str(&format!(
        "{}  {}\n",
        style.paint(Tone::Strong, &t.name_any()),
        style.paint(Tone::Quiet, &format!("namespace {}", t.namespace().unwrap_or_default()))
    ));
    out.push_str(&format!(
        "  {} · plan {} · {} · {} instances ready · age {age}\n",
        t.spec.profile.display_name,
        t.spec.stack.plan,
        style.paint(tone, &phase),
        ready_instances(v)
    ));
    let conditions = t.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if let Some(line) = attention(conditions) {
        out.push_str(&format!("  {}\n", style.paint(line.1, &line.0)));
    }
    // What the plan leaves out of the spec (see `ComponentsExcluded`).
    if let Some(c) = find(conditions, names::COND_COMPONENTS_EXCLUDED).filter(|c| c.status == "True") {
        out.push_str(&format!("  {}\n", style.paint(Tone::Busy, &format!("not in the plan: {}", c.message))));
    }
    let (credits, credit_tone) = credit_line(v);
    out.push_str(&format!("  {}  {}\n", style.paint(Tone::Quiet, "credits"), style.paint(credit_tone, &credits)));
    // The tenant's public URL; each instance lists its own below.
    if let Some(url) = t.status.as_ref().and_then(|s| s.url.as_ref()) {
        out.push_str(&format!("  {}      {url}\n", style.paint(Tone::Quiet, "url")));
    }
    if v.instances.is_empty() {
        out.push_str(&format!("\n  {}\n", style.paint(Tone::Quiet, "no instances yet (waiting for the controller)")));
    }
    for i in &v.instances {
        out.push('\n');
        out.push_str(&instance(i, now, style));
    }
    out
}

/// One TenantInstance: header, steps, URLs and the credentials Secret.
fn instance(i: &TenantInstance, now: DateTime<Utc>, style: Style) -> String {
    let status = i.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let (done, total) = progress(std::slice::from_ref(i));
    let header = format!(
        "  {}  {}  {}",
        style.paint(Tone::Strong, &i.name_any()),
        style.paint(phase_tone(phase), phase.as_str()),
        if total == 0 {
            String::new()
        } else {
            format!("{} {done}/{total} steps{}", format::bar(done, total, BAR_WIDTH), elapsed(&status.steps, now))
        }
    );
    let mut out = format!("{}\n", header.trim_end());
    if let Some(line) = attention(&status.conditions) {
        out.push_str(&format!("    {}\n", style.paint(line.1, &line.0)));
    }
    if status.steps.is_empty() {
        out.push_str(&format!("    {}\n", style.paint(Tone::Quiet, "no steps reported yet")));
    }
    let name_w = status.steps.iter().map(|s| format::width(s.name.as_str())).max().unwrap_or(0);
    for s in &status.steps {
        out.push_str(&step(s, name_w, now, style));
    }
    let urls = status.urls.unwrap_or_default();
    for (label, url) in [("service", urls.service), ("frontend", urls.frontend)] {
        if let Some(url) = url {
            out.push_str(&format!("    {} {url}\n", style.paint(Tone::Quiet, &format::pad(label, 12))));
        }
    }
    if let Some(secret) = status.credentials_secret_ref {
        let ns = i.namespace().unwrap_or_default();
        out.push_str(&format!(
            "    {} Secret {}  {}\n",
            style.paint(Tone::Quiet, &format::pad("credentials", 12)),
            secret.name,
            style.paint(Tone::Quiet, &format!("(kubectl get secret -n {ns} {} -o yaml)", secret.name))
        ));
    }
    out
}

/// One step line: mark, name, state, attempts, duration, message.
fn step(s: &StepStatus, name_w: usize, now: DateTime<Utc>, style: Style) -> String {
    let (mark, tone) = match s.state {
        StepState::Done => ("✓", Tone::Good),
        StepState::InProgress => ("●", Tone::Busy),
        StepState::Failed => ("✗", Tone::Bad),
        StepState::Pending => ("·", Tone::Quiet),
        StepState::Skipped => ("–", Tone::Quiet),
    };
    let state = match s.state {
        StepState::Done => "done",
        StepState::InProgress => "running",
        StepState::Failed => "failed",
        StepState::Pending => "pending",
        StepState::Skipped => "skipped",
    };
    let attempts = match s.attempts {
        0 => String::new(),
        1 => "1 try".into(),
        n => format!("{n} tries"),
    };
    let took = match (s.started_at, s.finished_at, s.state) {
        (Some(start), Some(end), _) => format::duration(end - start),
        (Some(start), None, StepState::InProgress | StepState::Failed) => {
            format!("for {}", format::duration(now - start))
        }
        _ => String::new(),
    };
    let mut line = format!(
        "    {} {}  {}  {}  {}",
        style.paint(tone, mark),
        format::pad(s.name.as_str(), name_w),
        style.paint(tone, &format::pad(state, 7)),
        format::pad(&attempts, 8),
        format::pad(&took, 10),
    );
    if let Some(m) = &s.message {
        line.push_str("  ");
        line.push_str(&style.paint(if s.state == StepState::Failed { Tone::Bad } else { Tone::Quiet }, m));
    }
    format!("{}\n", line.trim_end())
}

/// How long provisioning took (` · in 1m12s` once every step finished) or
/// has been going (` · for 41.0s`), from the first step's start.
fn elapsed(steps: &[StepStatus], now: DateTime<Utc>) -> String {
    let Some(start) = steps.iter().filter_map(|s| s.started_at).min() else { return String::new() };
    let finished = steps.iter().all(|s| matches!(s.state, StepState::Done | StepState::Skipped));
    match steps.iter().filter_map(|s| s.finished_at).max() {
        Some(end) if finished => format!(" · in {}", format::duration(end - start)),
        _ => format!(" · for {}", format::duration(now - start)),
    }
}

/// The phase a tenant is in and its colour (Pending until the controller reports).
fn tenant_phase(v: &TenantView) -> (String, Tone) {
    let phase = v.tenant.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
    let paused = v.tenant.spec.stack.paused;
    let text = if paused { format!("{} (paused)", phase.as_str()) } else { phase.as_str().to_string() };
    (text, phase_tone(phase))
}

fn phase_tone(p: Phase) -> Tone {
    match p {
        Phase::Ready => Tone::Good,
        Phase::Provisioning | Phase::Pending | Phase::Deleting | Phase::AwaitingApproval => Tone::Busy,
        Phase::Degraded | Phase::Failed => Tone::Bad,
    }
}

/// `ready/wanted`, from status when reported, else from the instances seen.
fn ready_instances(v: &TenantView) -> String {
    v.tenant.status.as_ref().and_then(|s| s.ready_instances.clone()).unwrap_or_else(|| {
        let ready = v.instances.iter().filter(|i| is_true(conditions_of(i), names::COND_READY)).count();
        format!("{ready}/{}", v.tenant.spec.instances.max(0))
    })
}

/// Steps finished (done or skipped) and steps in all, over `instances`.
fn progress(instances: &[TenantInstance]) -> (usize, usize) {
    let steps = instances.iter().flat_map(|i| i.status.iter().flat_map(|s| s.steps.iter()));
    steps.fold((0, 0), |(done, total), s| {
        (done + usize::from(matches!(s.state, StepState::Done | StepState::Skipped)), total + 1)
    })
}

fn tenant_url(v: &TenantView) -> Option<String> {
    v.tenant.status.as_ref().and_then(|s| s.url.clone()).or_else(|| {
        v.instances
            .iter()
            .find_map(|i| i.status.as_ref()?.urls.as_ref().and_then(|u| u.frontend.clone().or(u.service.clone())))
    })
}

/// Balance, allotment, use and flags: the ledger's status first, else the Tenant's mirror.
struct Credits {
    balance: Option<i64>,
    allotment: Option<i64>,
    used: Option<i64>,
    period_end: Option<DateTime<Utc>>,
    low: bool,
    exhausted: bool,
}

fn credits_of(v: &TenantView) -> Credits {
    let mirror = v.tenant.status.as_ref().and_then(|s| s.credits.clone()).unwrap_or_default();
    let ledger = v.ledger.as_ref().and_then(|l| l.status.clone()).unwrap_or_default();
    Credits {
        balance: ledger.balance.or(mirror.balance),
        allotment: ledger.allotment.or_else(|| v.ledger.as_ref().and_then(|l| l.spec.allotment_per_period)),
        used: ledger.used_this_period.or(mirror.used_this_period),
        period_end: ledger.period_end,
        low: mirror.low || is_true(&ledger.conditions, names::COND_LOW),
        exhausted: mirror.exhausted || is_true(&ledger.conditions, names::COND_EXHAUSTED),
    }
}

fn credit_tone(c: &Credits) -> Tone {
    if c.exhausted {
        Tone::Bad
    } else if c.low {
        Tone::Busy
    } else {
        Tone::Plain
    }
}

fn flags(c: &Credits) -> &'static str {
    if c.exhausted {
        " (exhausted)"
    } else if c.low {
        " (low)"
    } else {
        ""
    }
}

fn credit_cell(v: &TenantView) -> (String, Tone) {
    let c = credits_of(v);
    match c.balance {
        None => ("-".into(), Tone::Quiet),
        Some(b) => (format!("{}{}", format::credits(b), flags(&c)), credit_tone(&c)),
    }
}

fn credit_line(v: &TenantView) -> (String, Tone) {
    let c = credits_of(v);
    let Some(balance) = c.balance else {
        return ("not reported yet".into(), Tone::Quiet);
    };
    let mut s = format::credits(balance);
    if let Some(a) = c.allotment {
        s.push_str(&format!(" of {}", format::credits(a)));
    }
    s.push_str(" left");
    if let Some(u) = c.used {
        s.push_str(&format!(" · used {} this period", format::credits(u)));
    }
    if let Some(end) = c.period_end {
        s.push_str(&format!(" · renews {}", end.format("%Y-%m-%d")));
    }
    s.push_str(flags(&c));
    (s, credit_tone(&c))
}

/// A Kubernetes timestamp as chrono time (the epoch if out of range, which
/// cannot happen).
fn timestamp(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    time::to_chrono(t).unwrap_or_default()
}

fn conditions_of(i: &TenantInstance) -> &[Condition] {
    i.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

/// What needs a person's attention: Stalled (red), else a not-Ready reason.
/// (A status holds one condition per type: `api::conditions::merge` writes them.)
fn attention(conditions: &[Condition]) -> Option<(String, Tone)> {
    if let Some(c) = find(conditions, names::COND_STALLED).filter(|c| c.status == "True") {
        return Some((format!("stalled: {} ({})", c.message, c.reason), Tone::Bad));
    }
    find(conditions, names::COND_READY)
        .filter(|c| c.status != "True" && !c.message.is_empty())
        .map(|c| (format!("waiting: {}", c.message), Tone::Quiet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::fixtures::{instance, ledger, tenant};
    use crate::status::model::group;

    const PLAIN: Style = Style { color: false };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T09:05:00Z").unwrap().with_timezone(&Utc)
    }

    /// acme-dental in the middle of provisioning: four steps done, the
    /// service deploying on its second try, frontend skipped.
    fn provisioning() -> TenantView {
        let mut t = tenant("shop", "acme-dental", "starter");
        t.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Provisioning",
                "readyInstances": "0/1",
                "conditions": [{"type": "Ready", "status": "False", "reason": "InstancesNotReady",
                    "message": "acme-dental-0 is at step service", "lastTransitionTime": "2026-11-23T09:00:01Z"}],
                "credits": {"ledger": "acme-dental", "balance": 480000, "usedThisPeriod": 20000, "low": false, "exhausted": false}
            }))
            .unwrap(),
        );
        let i = instance(
            "shop",
            "acme-dental",
            0,
            serde_json::json!({
                "phase": "Provisioning",
                "currentStep": "service",
                "steps": [
                    {"name": "database", "state": "Done", "attempts": 1, "startedAt": "2026-11-23T09:00:01Z", "finishedAt": "2026-11-23T09:00:13.300Z"},
                    {"name": "schema", "state": "Done", "attempts": 1, "startedAt": "2026-11-23T09:00:13.300Z", "finishedAt": "2026-11-23T09:00:14.150Z"},
                    {"name": "credentials", "state": "Done", "attempts": 1, "startedAt": "2026-11-23T09:00:14.150Z", "finishedAt": "2026-11-23T09:00:14.200Z"},
                    {"name": "workspace", "state": "Done", "attempts": 1, "startedAt": "2026-11-23T09:00:14.200Z", "finishedAt": "2026-11-23T09:00:14.300Z"},
                    {"name": "service", "state": "InProgress", "attempts": 2, "startedAt": "2026-11-23T09:00:14.300Z", "message": "waiting for deployment d-42 (BUILDING)"},
                    {"name": "frontend", "state": "Skipped"},
                    {"name": "health", "state": "Pending"},
                    {"name": "notify", "state": "Pending"}
                ],
                "urls": {"service": "https://acme-dental-0.up.railway.app"},
                "credentialsSecretRef": {"name": "acme-dental-0-credentials"}
            }),
        );
        let l = ledger(
            "shop",
            "acme-dental",
            "acme-dental",
            serde_json::json!({
                "balance": 480000, "usedThisPeriod": 20000, "allotment": 500000, "periodEnd": "2026-12-01T00:00:00Z"
            }),
        );
        group(vec![t], vec![i], vec![l]).remove(0)
    }

    #[test]
    fn a_provisioning_tenant_reads_as_its_steps_with_durations() {
        let want = "\
acme-dental  namespace shop
  ACME-DENTAL · plan starter · Provisioning · 0/1 instances ready · age 5m
  waiting: acme-dental-0 is at step service
  credits  480,000 of 500,000 left · used 20,000 this period · renews 2026-12-01

  acme-dental-0  Provisioning  ■■■■■□□□ 5/8 steps · for 4m59s
    ✓ database     done     1 try     12.3s
    ✓ schema       done     1 try     850ms
    ✓ credentials  done     1 try     50ms
    ✓ workspace    done     1 try     100ms
    ● service      running  2 tries   for 4m45s   waiting for deployment d-42 (BUILDING)
    – frontend     skipped
    · health       pending
    · notify       pending
    service      https://acme-dental-0.up.railway.app
    credentials  Secret acme-dental-0-credentials  (kubectl get secret -n shop acme-dental-0-credentials -o yaml)
";
        assert_eq!(detail(&provisioning(), now(), PLAIN), want);
    }

    #[test]
    fn the_table_shows_progress_credits_and_namespaces_when_asked() {
        let mut ready = tenant("zoo", "bella", "growth");
        ready.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Ready", "readyInstances": "2/2", "url": "https://bella.vercel.app",
                "credits": {"ledger": "bella", "balance": 1200, "low": true, "exhausted": false}
            }))
            .unwrap(),
        );
        let fresh = tenant("shop", "new-co", "free");
        let mut views = vec![provisioning()];
        views.extend(group(vec![ready, fresh], vec![], vec![]));
        let want = "\
NAMESPACE  TENANT       PLAN     PHASE         READY  PROGRESS      CREDITS      URL                                   AGE
shop       acme-dental  starter  Provisioning  0/1    ■■■■■□□□ 5/8  480,000      https://acme-dental-0.up.railway.app  5m
shop       new-co       free     Pending       0/1    -             -            -                                     5m
zoo        bella        growth   Ready         2/2    -             1,200 (low)  https://bella.vercel.app              5m
";
        views.sort_by_key(|v| (v.tenant.namespace(), v.tenant.name_any()));
        assert_eq!(table(&views, true, now(), PLAIN), want);
        let without = table(&views[..1], false, now(), PLAIN);
        assert!(without.starts_with("TENANT ") && without.contains("\nacme-dental  starter"), "{without}");
    }

    #[test]
    fn columns_line_up_in_terminal_cells_with_wide_characters() {
        // A Japanese plan name (山田 pays for プレミアム) and an emoji domain:
        // each of these characters takes two cells, so counting chars
        // would pad them one space short per character and shift every
        // column after them.
        let mut yamada = tenant("shop", "yamada", "プレミアム");
        yamada.spec.profile.display_name = "山田歯科 🦷".into();
        yamada.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Ready", "readyInstances": "1/1", "url": "https://🦷.example",
                "credits": {"ledger": "yamada", "balance": 7, "low": false, "exhausted": false}
            }))
            .unwrap(),
        );
        let views = group(vec![yamada, tenant("shop", "zeta", "free")], vec![], vec![]);
        let want = "\
TENANT  PLAN        PHASE    READY  PROGRESS  CREDITS  URL                 AGE
yamada  プレミアム  Ready    1/1    -         7        https://🦷.example  5m
zeta    free        Pending  0/1    -         -        -                   5m
";
        assert_eq!(table(&views, false, now(), PLAIN), want);
        let detail = detail(&views[0], now(), PLAIN);
        assert!(
            detail.starts_with("yamada  namespace shop\n  山田歯科 🦷 · plan プレミアム · Ready · 1/1"),
            "{detail}"
        );
    }

    #[test]
    fn stalled_and_failed_stand_out_in_colour() {
        let mut v = provisioning();
        let status = v.instances[0].status.as_mut().unwrap();
        status.phase = Some(Phase::Failed);
        status.steps[4].state = StepState::Failed;
        status.steps[4].message = Some("Railway refused the token (401)".into());
        status.conditions = serde_json::from_value(serde_json::json!([{"type": "Stalled", "status": "True",
            "reason": "Unauthorized", "message": "railway token rejected", "lastTransitionTime": "2026-11-23T09:01:00Z"}]))
        .unwrap();
        let plain = detail(&v, now(), PLAIN);
        assert!(plain.contains("    stalled: railway token rejected (Unauthorized)\n"), "{plain}");
        assert!(
            plain.contains("✗ service      failed   2 tries   for 4m45s   Railway refused the token (401)"),
            "{plain}"
        );
        let coloured = detail(&v, now(), Style { color: true });
        assert!(coloured.contains("\x1b[31mstalled: railway token rejected (Unauthorized)\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[31m✗\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[32m✓\x1b[0m"), "{coloured}");
    }

    #[test]
    fn a_component_the_plan_excludes_is_named_on_the_tenant_and_its_step() {
        let why = "plan free does not include a frontend; upgrade the plan or remove components.frontend";
        let mut v = provisioning();
        v.tenant.status.get_or_insert_default().conditions.extend(
            serde_json::from_value::<Vec<Condition>>(serde_json::json!([{"type": "ComponentsExcluded",
                "status": "True", "reason": "ExcludedByPlan", "message": why,
                "lastTransitionTime": "2026-11-23T09:01:00Z"}]))
            .unwrap(),
        );
        let frontend =
            v.instances[0].status.as_mut().unwrap().steps.iter_mut().find(|s| s.name == crate::api::StepName::Frontend);
        frontend.unwrap().message = Some(why.into());
        let plain = detail(&v, now(), PLAIN);
        assert!(plain.contains(&format!("\n  not in the plan: {why}\n")), "{plain}");
        assert!(plain.contains(&format!("skipped{}{why}\n", " ".repeat(24))), "{plain}");
    }

    #[test]
    fn a_tenant_the_controller_has_not_seen_says_so() {
        let v = group(vec![tenant("shop", "new-co", "free")], vec![], vec![]).remove(0);
        let out = detail(&v, now(), PLAIN);
        assert!(out.contains("plan free · Pending · 0/1 instances ready"), "{out}");
        assert!(out.contains("credits  not reported yet"), "{out}");
        assert!(out.contains("no instances yet (waiting for the controller)"), "{out}");
        let mut waiting = provisioning();
        waiting.instances[0].status = None;
        let out = detail(&waiting, now(), PLAIN);
        assert!(out.contains("\n  acme-dental-0  Pending\n    no steps reported yet\n"), "{out:?}");
    }

    #[test]
    fn exhausted_credits_win_over_low() {
        let mut v = provisioning();
        v.ledger.as_mut().unwrap().status.as_mut().unwrap().conditions = serde_json::from_value(serde_json::json!([
            {"type": "Low", "status": "True", "reason": "Low", "message": "", "lastTransitionTime": "2026-11-23T09:01:00Z"},
            {"type": "Exhausted", "status": "True", "reason": "Exhausted", "message": "", "lastTransitionTime": "2026-11-23T09:01:00Z"}
        ]))
        .unwrap();
        let out = detail(&v, now(), PLAIN);
        assert!(out.contains("renews 2026-12-01 (exhausted)"), "{out}");
    }

    #[test]
    fn a_finished_instance_says_how_long_provisioning_took() {
        let mut v = provisioning();
        for s in &mut v.instances[0].status.as_mut().unwrap().steps {
            if matches!(s.state, StepState::InProgress | StepState::Pending) {
                s.state = StepState::Done;
                s.finished_at = Some(DateTime::parse_from_rfc3339("2026-11-23T09:01:13Z").unwrap().with_timezone(&Utc));
            }
        }
        let out = detail(&v, now(), PLAIN);
        assert!(out.contains("  acme-dental-0  Provisioning  ■■■■■■■■ 8/8 steps · in 1m12s\n"), "{out}");
    }
}
