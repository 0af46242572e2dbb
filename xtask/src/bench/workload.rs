//! The fan-out bench's workload ([`workload`]: one fixed list of tasks every tool can
//! express) and the files that express it for each tool: troupe's playbook, the two
//! OpenSSH shell baselines, Ansible's playbook and pyinfra's deploy, each quoted by its
//! own language's rules.

use super::*;

/// One task of the workload, in a form every tool can express.
#[derive(Debug, Clone)]
pub(super) enum Task {
    /// A directory with mode 0755.
    Dir { path: String },
    /// A file with fixed content and mode 0644.
    File { path: String, content: String },
    /// A file rendered from template `name` (in `templates/`) with mode 0644.
    Template { path: String, name: String },
    /// `argv` run unless `creates` exists.
    Guarded { argv: Vec<String>, creates: String },
}

impl Task {
    pub(super) fn title(&self) -> String {
        match self {
            Task::Dir { path } => format!("directory {path}"),
            Task::File { path, .. } => format!("file {path}"),
            Task::Template { path, .. } => format!("template {path}"),
            Task::Guarded { creates, .. } => format!("guarded command creating {creates}"),
        }
    }
}

pub(super) const TEMPLATES: usize = 6;

/// The text of template `i` (1-based). It uses two variables every tool provides and
/// ends without a newline, so Jinja2's and minijinja's trailing-newline rules agree.
pub(super) fn template_source(i: usize) -> String {
    format!(
        "# template {i} of the troupe fan-out benchmark\n\
         host = {{{{ inventory_hostname }}}}\n\
         listen = {{{{ bench_address }}}}:{port}\n\
         data_dir = /srv/bench/data/{{{{ inventory_hostname }}}}-{i}\n\
         # end",
        port = 8000 + i
    )
}

/// Render a template the way every tool does for these two variables.
pub(super) fn render_template(i: usize, host: &str, address: &str) -> String {
    template_source(i)
        .replace("{{ inventory_hostname }}", host)
        .replace("{{ bench_address }}", address)
}

/// 24 tasks per host: 5 directories, 8 files with fixed content, 6 templated files and
/// 5 guarded commands (3 `touch`, 2 `cp` of files written earlier).
pub(super) fn workload() -> Vec<Task> {
    workload_in(REMOTE_DIR)
}

/// The workload under directory `d` (tests use a temporary one).
pub(super) fn workload_in(d: &str) -> Vec<Task> {
    let mut tasks = vec![Task::Dir { path: d.to_string() }];
    for sub in ["etc", "lib", "run", "tpl"] {
        tasks.push(Task::Dir {
            path: format!("{d}/{sub}"),
        });
    }
    for i in 1..=8 {
        let mut content = format!("# file {i} of the troupe fan-out benchmark\n");
        for k in 1..=8 {
            let _ = writeln!(content, "key_{k} = value-{i}-{k}");
        }
        tasks.push(Task::File {
            path: format!("{d}/etc/file-{i:02}.conf"),
            content,
        });
    }
    for i in 1..=TEMPLATES {
        tasks.push(Task::Template {
            path: format!("{d}/tpl/tpl-{i:02}.conf"),
            name: format!("tpl-{i:02}.j2"),
        });
    }
    for i in 1..=3 {
        let m = format!("{d}/run/marker-{i:02}");
        tasks.push(Task::Guarded {
            argv: vec!["touch".into(), m.clone()],
            creates: m,
        });
    }
    for (i, src) in [
        (1, format!("{d}/etc/file-01.conf")),
        (2, format!("{d}/tpl/tpl-01.conf")),
    ] {
        let dst = format!("{d}/lib/copy-{i:02}.conf");
        tasks.push(Task::Guarded {
            argv: vec!["cp".into(), src, dst.clone()],
            creates: dst,
        });
    }
    tasks
}

/// Template number of a template task (`tpl-03.j2` → 3).
pub(super) fn template_index(name: &str) -> usize {
    name.trim_start_matches("tpl-")
        .trim_end_matches(".j2")
        .parse()
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------------
// Quoting for the generated files (each language's own rules)

pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A JSON string (also a YAML and a Python string literal for our ASCII content).
pub(super) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A KDL v2 quoted string.
pub(super) fn kdl_str(s: &str) -> String {
    json_str(s)
}

// ---------------------------------------------------------------------------------
// One host count: generated files

/// The hosts of one measurement (the first N of the lab).
pub(super) struct Hosts<'a> {
    pub(super) lab: &'a LabInfo,
    pub(super) n: usize,
}

impl Hosts<'_> {
    pub(super) fn iter(&self) -> impl Iterator<Item = &lab::LabHost> {
        self.lab.hosts.iter().take(self.n)
    }
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

pub(super) fn write_templates(dir: &Path) -> Result<()> {
    for i in 1..=TEMPLATES {
        write(&dir.join(format!("tpl-{i:02}.j2")), &template_source(i))?;
    }
    Ok(())
}

/// troupe: inventory.kdl, playbook.kdl, templates/.
pub(super) fn gen_troupe(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let mut inv = format!(
        "// fan-out benchmark inventory ({} hosts), written by `cargo xtask bench`\n\
         defaults user=root port=22 identity={} known-hosts={}\n\
         group bench {{\n",
        hosts.n,
        kdl_str(&hosts.lab.key_path().display().to_string()),
        kdl_str(&hosts.lab.known_hosts_path().display().to_string()),
    );
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "    host {} address={} {{ vars {{ bench_address {} }} }}",
            h.name,
            kdl_str(&h.address),
            kdl_str(&h.address)
        );
    }
    inv.push_str("}\n");
    write(&dir.join("inventory.kdl"), &inv)?;

    let mut pb = String::from(
        "// fan-out benchmark workload, written by `cargo xtask bench`\nplay \"bench\" hosts=\"bench\" {\n",
    );
    for t in tasks {
        let body = match t {
            Task::Dir { path } => format!("file {} state=\"directory\" mode=0o755", kdl_str(path)),
            Task::File { path, content } => {
                format!(
                    "copy content={} dest={} mode=0o644",
                    kdl_str(content),
                    kdl_str(path)
                )
            }
            Task::Template { path, name } => {
                format!("template {} dest={} mode=0o644", kdl_str(name), kdl_str(path))
            }
            Task::Guarded { argv, creates } => {
                format!(
                    "command {} creates={}",
                    kdl_str(&argv.join(" ")),
                    kdl_str(creates)
                )
            }
        };
        let _ = writeln!(pb, "    task {} {{\n        {body}\n    }}", kdl_str(&t.title()));
    }
    pb.push_str("}\n");
    write(&dir.join("playbook.kdl"), &pb)?;
    write_templates(&dir.join("templates"))
}

/// The shell code of one task: check, and change only what differs, in one go. Same
/// semantics as troupe's modules: directories get mode 0755; files are compared by
/// content and mode, then written atomically (temp file, fsync, rename, fsync of the
/// directory) with mode 0644; guarded commands run unless their path exists.
pub(super) fn task_shell(t: &Task, host: &str, address: &str) -> String {
    let put = |path: &str, content: &str| {
        let dir = &path[..path.rfind('/').unwrap_or(0).max(1)];
        format!(
            "p={p}; c={c}; if [ -f \"$p\" ] && printf '%s' \"$c\" | cmp -s - \"$p\" && [ \"$(stat -c %a \"$p\")\" = 644 ]; then :; \
             else t=$(mktemp {d}/.bench.XXXXXX) && printf '%s' \"$c\" > \"$t\" && chmod 644 \"$t\" && sync \"$t\" && mv -f \"$t\" \"$p\" && sync {d}; fi",
            p = sh_quote(path),
            c = sh_quote(content),
            d = sh_quote(dir),
        )
    };
    match t {
        Task::Dir { path } => {
            let p = sh_quote(path);
            format!(
                "if [ -d {p} ] && [ \"$(stat -c %a {p})\" = 755 ]; then :; else mkdir -p {p} && chmod 755 {p}; fi"
            )
        }
        Task::File { path, content } => put(path, content),
        Task::Template { path, name } => put(path, &render_template(template_index(name), host, address)),
        Task::Guarded { argv, creates } => {
            let cmd: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
            format!("[ -e {} ] || {}", sh_quote(creates), cmd.join(" "))
        }
    }
}

/// The ssh command prefix both OpenSSH baselines use: the lab's key and known_hosts,
/// strict host-key checking, like troupe.
pub(super) fn ssh_prefix(lab: &LabInfo) -> String {
    let mut s = String::from("ssh");
    for a in lab.ssh_args() {
        s.push(' ');
        s.push_str(&sh_quote(&a));
    }
    s
}

/// ssh-task/run.sh: per host, a ControlMaster (`-fN`), then one `ssh` per task over it,
/// then `-O exit`; all hosts in parallel; non-zero if any task failed anywhere.
pub(super) fn gen_ssh_task(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let ssh = ssh_prefix(hosts.lab);
    let mut s = format!(
        "#!/bin/sh\n# One multiplexed OpenSSH round trip per task, all hosts in parallel.\n# Written by `cargo xtask bench`.\nbssh() {{ {} \"$@\"; }}\ncd {}\n",
        ssh,
        sh_quote(&dir.display().to_string())
    );
    for (i, h) in hosts.iter().enumerate() {
        let _ = writeln!(s, "host_{i}() {{\n  S=cm-{i}; rc=0");
        let _ = writeln!(
            s,
            "  bssh -o ControlMaster=yes -o ControlPath=$S -o ControlPersist=yes -fN {a} || return 1",
            a = h.address
        );
        for (k, t) in tasks.iter().enumerate() {
            let remote = task_shell(t, &h.name, &h.address);
            let _ = writeln!(
                s,
                "  bssh -o ControlPath=$S {a} {r} || {{ echo \"{n}: task {k} failed\" >&2; rc=1; }}",
                a = h.address,
                r = sh_quote(&remote),
                n = h.name,
                k = k + 1
            );
        }
        let _ = writeln!(
            s,
            "  bssh -o ControlPath=$S -O exit {a} 2>/dev/null\n  return $rc\n}}",
            a = h.address
        );
    }
    s.push_str("pids=\"\"\n");
    for i in 0..hosts.n {
        let _ = writeln!(s, "host_{i} & pids=\"$pids $!\"");
    }
    s.push_str("fail=0\nfor p in $pids; do wait $p || fail=1; done\nexit $fail\n");
    write(&dir.join("run.sh"), &s)
}

/// ssh-host/run.sh plus host-NAME.sh: the whole workload of a host as one script sent
/// over one fresh connection (`ssh host sh -s < host-NAME.sh`), all hosts in parallel.
pub(super) fn gen_ssh_host(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let ssh = ssh_prefix(hosts.lab);
    let mut run = format!(
        "#!/bin/sh\n# One OpenSSH round trip per host (the floor), all hosts in parallel.\n# Written by `cargo xtask bench`.\ncd {}\npids=\"\"\n",
        sh_quote(&dir.display().to_string())
    );
    for h in hosts.iter() {
        let mut script = String::from("# the whole workload of one host\n");
        for (k, t) in tasks.iter().enumerate() {
            let _ = writeln!(
                script,
                "{{ {}; }} || {{ echo \"{}: task {} failed\" >&2; exit 1; }}",
                task_shell(t, &h.name, &h.address),
                h.name,
                k + 1
            );
        }
        let file = format!("host-{}.sh", h.name);
        write(&dir.join(&file), &script)?;
        let _ = writeln!(run, "{ssh} {} sh -s < {file} & pids=\"$pids $!\"", h.address);
    }
    run.push_str("fail=0\nfor p in $pids; do wait $p || fail=1; done\nexit $fail\n");
    write(&dir.join("run.sh"), &run)
}

/// ansible/: ansible.cfg, inventory.ini, playbook.yml (JSON is YAML), templates/.
pub(super) fn gen_ansible(dir: &Path, hosts: &Hosts, tasks: &[Task], python: &str) -> Result<()> {
    let cfg = format!(
        "# written by `cargo xtask bench`\n\
         [defaults]\n\
         inventory = inventory.ini\n\
         forks = {forks}\n\
         gathering = explicit\n\
         host_key_checking = True\n\
         retry_files_enabled = False\n\
         interpreter_python = {python}\n\
         [ssh_connection]\n\
         pipelining = True\n\
         ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\n",
        forks = hosts.n.max(5),
        kh = hosts.lab.known_hosts_path().display(),
    );
    write(&dir.join("ansible.cfg"), &cfg)?;
    let mut inv = String::from("[bench]\n");
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "{} ansible_host={} bench_address={}",
            h.name, h.address, h.address
        );
    }
    let _ = write!(
        inv,
        "[bench:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n",
        hosts.lab.key_path().display()
    );
    write(&dir.join("inventory.ini"), &inv)?;
    let mut items = Vec::new();
    for t in tasks {
        let body = match t {
            Task::Dir { path } => {
                format!(
                    "\"ansible.builtin.file\": {{\"path\": {}, \"state\": \"directory\", \"mode\": \"0755\"}}",
                    json_str(path)
                )
            }
            Task::File { path, content } => format!(
                "\"ansible.builtin.copy\": {{\"dest\": {}, \"content\": {}, \"mode\": \"0644\"}}",
                json_str(path),
                json_str(content)
            ),
            Task::Template { path, name } => format!(
                "\"ansible.builtin.template\": {{\"src\": {}, \"dest\": {}, \"mode\": \"0644\"}}",
                json_str(&format!("templates/{name}")),
                json_str(path)
            ),
            Task::Guarded { argv, creates } => format!(
                "\"ansible.builtin.command\": {{\"argv\": [{}], \"creates\": {}}}",
                argv.iter().map(|a| json_str(a)).collect::<Vec<_>>().join(", "),
                json_str(creates)
            ),
        };
        items.push(format!("      {{\"name\": {}, {body}}}", json_str(&t.title())));
    }
    let pb = format!(
        "[\n  {{\n    \"name\": \"bench\",\n    \"hosts\": \"bench\",\n    \"gather_facts\": false,\n    \"tasks\": [\n{}\n    ]\n  }}\n]\n",
        items.join(",\n")
    );
    write(&dir.join("playbook.yml"), &pb)?;
    write_templates(&dir.join("templates"))
}

/// pyinfra/: inventory.py, deploy.py, templates/.
pub(super) fn gen_pyinfra(dir: &Path, hosts: &Hosts, tasks: &[Task], python: &str) -> Result<()> {
    let mut inv = String::from("# written by `cargo xtask bench`\nbench = [\n");
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "    ({}, {{\"ssh_hostname\": {}, \"ssh_user\": \"root\", \"ssh_key\": {}, \"ssh_known_hosts_file\": {}, \
             \"ssh_strict_host_key_checking\": \"yes\", \"bench_address\": {}, \"python\": {}}}),",
            json_str(&h.name),
            json_str(&h.address),
            json_str(&hosts.lab.key_path().display().to_string()),
            json_str(&hosts.lab.known_hosts_path().display().to_string()),
            json_str(&h.address),
            json_str(python),
        );
    }
    inv.push_str("]\n");
    write(&dir.join("inventory.py"), &inv)?;
    let mut d = String::from(
        "# written by `cargo xtask bench`\n\
         from io import StringIO\n\
         from pyinfra import host\n\
         from pyinfra.facts.files import File\n\
         from pyinfra.operations import files, server\n\n",
    );
    for t in tasks {
        let name = json_str(&t.title());
        let _ = match t {
            Task::Dir { path } => writeln!(
                d,
                "files.directory(name={name}, path={}, mode=\"755\")",
                json_str(path)
            ),
            Task::File { path, content } => writeln!(
                d,
                "files.put(name={name}, src=StringIO({}), dest={}, mode=\"644\")",
                json_str(content),
                json_str(path)
            ),
            Task::Template { path, name: tpl } => writeln!(
                d,
                "files.template(name={name}, src={}, dest={}, mode=\"644\", inventory_hostname=host.name, bench_address=host.data.bench_address)",
                json_str(&format!("templates/{tpl}")),
                json_str(path)
            ),
            Task::Guarded { argv, creates } => writeln!(
                d,
                "if not host.get_fact(File, path={}):\n    server.shell(name={name}, commands=[{}])",
                json_str(creates),
                json_str(&argv.join(" "))
            ),
        };
    }
    write(&dir.join("deploy.py"), &d)?;
    write_templates(&dir.join("templates"))
}

#[cfg(test)]
mod tests {
    //! The generators, on this machine's `sh` (no lab, no timing).
    use super::*;

    #[test]
    fn workload_has_every_kind_and_at_least_20_tasks() {
        let w = workload();
        assert!(w.len() >= 20, "{} tasks", w.len());
        let kinds = |f: fn(&Task) -> bool| w.iter().filter(|t| f(t)).count();
        assert!(kinds(|t| matches!(t, Task::Dir { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::File { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::Template { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::Guarded { .. })) > 0);
    }

    #[test]
    fn string_literals_escape_what_they_must() {
        assert_eq!(json_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(
            render_template(2, "podc01", "127.0.9.1").lines().nth(2),
            Some("listen = 127.0.9.1:8002")
        );
    }

    /// The per-host script (the floor) does the whole workload in a scratch directory,

    #[test]
    fn per_host_script_does_the_work_and_is_idempotent() {
        let base = std::env::temp_dir().join(format!("troupe-bench-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("bench");
        let tasks = workload_in(&root.display().to_string());
        let script: String = tasks
            .iter()
            .map(|t| format!("{} || exit 1\n", task_shell(t, "podc01", "127.0.9.1")))
            .collect();
        let run = || {
            let out = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run();
        let first = fingerprint(&root);
        assert_eq!(first.len(), 1 + 4 + 8 + 6 + 5, "{first:#?}"); // root dir, 4 subdirs, files
        assert_eq!(
            first
                .get("etc/file-01.conf")
                .map(|v| v.starts_with("file 644 # file 1")),
            Some(true)
        );
        assert_eq!(first.get("tpl").map(String::as_str), Some("dir 755"));
        let tpl = first.get("tpl/tpl-03.conf").expect("template written");
        assert!(
            tpl.contains("host = podc01") && tpl.contains("listen = 127.0.9.1:8003"),
            "{tpl}"
        );
        let mtime = |p: &str| {
            fs::metadata(root.join(p))
                .and_then(|m| m.modified())
                .expect("exists")
        };
        let before = mtime("etc/file-02.conf");
        std::thread::sleep(Duration::from_millis(20));
        run();
        assert_eq!(fingerprint(&root), first);
        assert_eq!(
            mtime("etc/file-02.conf"),
            before,
            "an unchanged file was rewritten"
        );
        fs::remove_dir_all(&base).expect("clean up");
    }
}
