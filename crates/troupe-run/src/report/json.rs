//! `--output json`: one JSON object per line per event, flushed as it happens, for CI
//! logs and other programs. The field names are part of troupe's interface.

use std::io::Write;
use std::sync::Mutex;

use super::{Event, Reporter};

pub struct Json<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> Json<W> {
    pub fn new(out: W) -> Self {
        Json { out: Mutex::new(out) }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write + Send> Reporter for Json<W> {
    fn event(&self, event: &Event) {
        let line = match serde_json::to_string(event) {
            Ok(line) => line,
            Err(e) => format!(r#"{{"event":"internal_error","message":{:?}}}"#, e.to_string()),
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe (`| head`) must not kill the run: the hosts still get configured.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{HostResult, Stats, Status};
    use indexmap::IndexMap;
    use std::time::Duration;

    #[test]
    fn recap_and_results_are_one_object_per_line() {
        let json = Json::new(Vec::new());
        json.event(&Event::HostResult(HostResult {
            play: "p".into(),
            task: "t".into(),
            host: "podc01".into(),
            status: Status::Changed,
            item: None,
            msg: Some("create /srv/x".into()),
            diffs: vec![],
            error: None,
            check_mode: false,
            ignored: false,
            delegated_to: None,
            attempts: None,
            duration: Duration::from_millis(5),
        }));
        let mut hosts = IndexMap::new();
        hosts.insert(
            "podc01".to_string(),
            Stats {
                ok: 1,
                changed: 1,
                ..Stats::default()
            },
        );
        json.event(&Event::Recap {
            hosts,
            elapsed: Duration::from_secs(1),
            interrupted: false,
            signal: None,
        });
        let text = String::from_utf8(json.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"event":"host_result","play":"p","task":"t","host":"podc01","status":"changed","msg":"create /srv/x","duration_ms":5}"#
        );
        assert_eq!(
            lines[1],
            r#"{"event":"recap","hosts":{"podc01":{"ok":1,"changed":1,"failed":0,"unreachable":0,"skipped":0,"ignored":0}}}"#
        );
    }
}
