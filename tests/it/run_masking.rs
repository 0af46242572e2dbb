//! What troupe prints of what hosts and variables hold, tried as an attacker would
//! (issue 12): terminal control sequences in a command's output reach the terminal only
//! as escapes, and secret values stay masked in every form they are printed in (wrapped,
//! cut, shell-quoted, JSON-escaped, in a source snippet), on the real lab.

use troupe_tests::Lab;

use crate::run_util::{filtered, lab_inventory, playbook, run};

/// A command's stderr that sets the window title, erases the `failed:` line and paints
/// a fake `ok:` over it, and writes the clipboard (OSC 52).
const CONTROLS: &str = r##"
play "Controls" hosts=podc01 {
    task "Paint" { shell #"printf '\033]0;owned\007\033[2K\rok: [podc01]\n\033]52;c;cm0gLXJmIH4=\007\tdone\n' >&2; exit 1"# }
}
"##;

#[test]
fn control_sequences_in_command_output_are_shown_escaped() {
    let lab = Lab::shared();
    let pb = playbook(CONTROLS);
    let out = run(lab, &pb.path, &lab_inventory(lab), &[]);
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(
        !out.stdout.contains(['\x1b', '\r', '\x07']),
        "no control character but newline and tab reaches the terminal: {:?}",
        out.stdout
    );
    let text = filtered(&out.stdout, pb.dir.path());
    insta::assert_snapshot!(text, @r"
    PLAY [Controls] podc01

    TASK [Paint] [TMP]/play.kdl:3:5
    failed: [podc01]
        command exited with code 1; stderr:
        \e]0;owned\x07\e[2K\rok: [podc01]
        \e]52;c;cm0gLXJmIH4=\x07	done

    RECAP
    podc01  ok=0   changed=0   failed=1   unreachable=0   skipped=0
    FAILED (1 failed): 1 hosts, 0 ok, 0 changed, 1 failed, 0 unreachable, 0 skipped in [ELAPSED]
    ");
}

/// Secrets in the forms output gives them: a 180-character one in an error miette wraps
/// at 100 columns, one shell-quoted in a command summary, one cut by the summary's
/// 100-character limit, one JSON-escaped in a `debug` of a registered result.
const FORMS: &str = r##"
play "Forms" hosts=podc01 {
    vars {
        (secret)long "LONGSECRET-aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffffgggggggggghhhhhhhhhhiiiiiiiiiijjjjjjjjjjkkkkkkkkkkllllllllllmmmmmmmmmmnnnnnnnnnnooooooooooppppppppppqqqqqqqq-END"
        (secret)sq "it's-Secret1"
        (secret)dq #"dq"Secret\2"#
        (secret)cut "CUTSECRET-0123456789"
    }
    task "Long" ignore-errors=#true { copy src="{{ long }}.conf" dest="/srv/x" }
    task "Quoted" { command { argv "echo" "{{ sq }}"; }; }
    task "Cut" { command "echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {{ cut }}" }
    task "Registered" { command { argv "printf" "%s\\n" "{{ dq }}"; }; register "r" }
    task "Debug" { debug var="r" }
}
"##;

const SECRETS: [&str; 4] = [
    "LONGSECRET-aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffffgggggggggghhhhhhhhhhiiiiiiiiiijjjjjjjjjjkkkkkkkkkkllllllllllmmmmmmmmmmnnnnnnnnnnooooooooooppppppppppqqqqqqqq-END",
    "it's-Secret1",
    r#"dq"Secret\2"#,
    "CUTSECRET-0123456789",
];

/// No six characters in a row of any secret (in any form) are in `text`.
fn assert_no_piece(text: &str, what: &str) {
    for secret in SECRETS {
        let forms = [
            secret.to_string(),
            secret.replace('\'', r"'\''"),
            serde_json::to_string(secret)
                .unwrap()
                .trim_matches('"')
                .to_string(),
        ];
        for form in forms {
            let chars: Vec<char> = form.chars().collect();
            for piece in chars.windows(6) {
                let piece: String = piece.iter().collect();
                if piece.contains("aaaa") && !piece.contains('-') {
                    // runs of one letter are in the playbook's own text too
                    continue;
                }
                assert!(
                    !text.contains(&piece),
                    "{what}: {piece:?} of {secret:?} shown:\n{text}"
                );
            }
        }
    }
}

#[test]
fn secrets_stay_masked_when_wrapped_quoted_cut_or_escaped() {
    let lab = Lab::shared();
    let pb = playbook(FORMS);
    let json = run(lab, &pb.path, &lab_inventory(lab), &["--output", "json"]);
    assert_eq!(json.code, 0, "{}", json.show());
    assert_no_piece(&json.stdout, "json stdout");
    assert_no_piece(&json.stderr, "json stderr");
    let debug = &json.results("Debug")[0];
    assert!(
        debug["msg"].as_str().unwrap().contains(r#""stdout":"********""#),
        "{debug}"
    );

    let human = run(lab, &pb.path, &lab_inventory(lab), &[]);
    assert_eq!(human.code, 0, "{}", human.show());
    assert_no_piece(&human.stdout, "human stdout");
    assert_no_piece(&human.stderr, "human stderr");
    let text = filtered(&human.stdout, pb.dir.path());
    let text: Vec<&str> = text.lines().map(str::trim_end).collect();
    let text = text.join("\n");
    insta::assert_snapshot!(text, @r#"
    PLAY [Forms] podc01

    TASK [Long] [TMP]/play.kdl:9:5
    failed: [podc01] (failure ignored)
        troupe::task::failed

          × `********.conf` not found on the controller
          help: looked in [TMP]/files; put the file in one of them

    TASK [Quoted] [TMP]/play.kdl:10:5
    changed: [podc01] run: echo '********'

    TASK [Cut] [TMP]/play.kdl:11:5
    changed: [podc01] run: echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx ********…

    TASK [Registered] [TMP]/play.kdl:12:5
    changed: [podc01] run: printf '%s\n' '********'

    TASK [Debug] [TMP]/play.kdl:13:5
    ok: [podc01] r = {"rc":0,"stdout":"********","stderr":"","stdout_lines":["********"],"cmd":"printf '%s\\n' '********'","changed":true,"failed":false,"msg":"run: printf '%s\\n' '********'"}

    RECAP
    podc01  ok=1   changed=3   failed=0   unreachable=0   skipped=0 ignored=1
    OK: 1 hosts, 1 ok, 3 changed, 0 failed, 0 unreachable, 0 skipped in [ELAPSED]
    "#);
}

/// A checker error in an inventory and in an `-e @vars.kdl` file: the report's source
/// snippets show where the problem is, with the `(secret)` values blanked out.
#[test]
fn checker_snippets_never_show_secret_values() {
    let lab = Lab::shared();
    let pb = playbook("play \"P\" hosts=all {\n    task \"T\" { debug msg=\"hi\" }\n}\n");
    let inv = pb.dir.path().join("inventory.kdl");
    std::fs::write(
        &inv,
        "host \"podc01\" address=\"127.0.0.1\" {\n    vars {\n        (secret)db_password \"hunter2-in-the-inventory\"\n        port \"22\" bogus=1\n    }\n}\n",
    )
    .unwrap();
    let out = run(lab, &pb.path, &inv, &[]);
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(!out.stderr.contains("hunter2"), "{}", out.show());
    insta::assert_snapshot!(filtered(&out.stderr, pb.dir.path()), @r#"
    troupe::dsl::invalid

      x [TMP]/inventory.kdl: 1 problem

    Error: troupe::dsl::invalid_value

      x invalid value: `port` mixes positional values and properties
       ,-[[TMP]/inventory.kdl:4:14]
     3 |         (secret)db_password***************************
     4 |         port "22" bogus=1
       :              ^^|^
       :                `-- invalid
     5 |     }
       `----
      help: a node holds a list (`name 1 2 3`) or a map (`name a=1 b=2`), not both
    "#);

    let vars = pb.dir.path().join("secrets.kdl");
    std::fs::write(&vars, "(secret)token \"tok-very-secret-value\" oops\"\n").unwrap();
    let arg = format!("@{}", vars.display());
    let out = run(lab, &pb.path, &lab_inventory(lab), &["-e", &arg]);
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(!out.stderr.contains("very-secret"), "{}", out.show());
    insta::assert_snapshot!(filtered(&out.stderr, pb.dir.path()), @r"
    troupe::dsl::invalid

      x [TMP]/secrets.kdl: 1 problem

    Error: troupe::dsl::syntax

      x Expected identifier string
       ,-[[TMP]/secrets.kdl:1:39]
     1 | (secret)token******************************
       :                                       ^^|^^
       :                                         `-- not identifier string
       `----
      help: A valid value was partially parsed, but was not followed by a value
            terminator. Did you want a space here?
    ");
}

/// The command waits for `go` in its folder, so the test can look at every process of
/// the host while it runs; then it writes what it got in `$TOKEN` and on stdin.
const ENV: &str = r##"
play "Env" hosts=podc01 {
    vars { (secret)token "tok'en \"q\" $HOME \\ back\nline2 env-secret-marker" }
    task "Wait" {
        shell "while [ ! -e go ]; do sleep 0.1; done; printf %s \"$TOKEN\" > token; cat > stdin" chdir="{{ dir }}" stdin="user's stdin\nline 2\n" {
            env { TOKEN "{{ token }}"; PLAIN "x" }
        }
    }
}
"##;

/// Every process's argv on the machine (the lab's hosts share the controller's pid
/// namespace), NULs shown as spaces.
fn all_cmdlines() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    out
}

#[test]
fn env_values_are_never_on_a_command_line() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_masking_env");
    let local = lab.host_path("podc01", "/srv").join("tests/run_masking_env");
    let pb = playbook(ENV);
    let dir_arg = format!("dir={dir}");
    let mut child = lab
        .troupe_cmd()
        .args(["run", pb.path_str(), "-i"])
        .arg(lab_inventory(lab))
        .args(["-e", &dir_arg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until the command runs (its loop is on a command line of its own), then once more
    // with it running: no process shows the secret, or any line of it.
    loop {
        let lines = all_cmdlines();
        for l in &lines {
            assert!(
                !l.contains("env-secret-marker") && !l.contains("tok'en"),
                "a command line shows the env value: {l}"
            );
        }
        if lines
            .iter()
            .any(|l| l.contains("while [ ! -e go ]") && l.contains("TOKEN"))
        {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "troupe ended ({status}) before the command was seen:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(local.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("env-secret-marker"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(local.join("token")).unwrap(),
        "tok'en \"q\" $HOME \\ back\nline2 env-secret-marker",
        "the command gets the value byte for byte"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("stdin")).unwrap(),
        "user's stdin\nline 2\n",
        "and exactly the task's stdin after it"
    );
}

/// A generated password holding `{{` and `%}`, registered and used through a variable:
/// it is data, passed as it is; a written value that is a broken template is reported
/// naming its variable, without showing the value.
const BRACES: &str = r##"
play "Braces" hosts=podc01 {
    vars { (secret)literal "{% raw %}lit{{eral%}-secret{% endraw %}" }
    task "Generate" no-log=#true { shell "printf 'gen\\173\\173er%%}ated-secret'"; register "gen" }
    task "Use" {
        vars { pw "{{ gen.stdout }}" }
        shell "printf '%s|%s' \"$PW\" \"$LIT\" > {{ dir }}/got" { env { PW "{{ pw }}"; LIT "{{ literal }}" } }
    }
}
"##;

const BROKEN: &str = r##"
play "Broken" hosts=podc01 {
    vars { (secret)broken "bro{{ken-secret" }
    task "Any" { debug msg="hi" }
}
"##;

#[test]
fn values_holding_template_syntax_are_data_or_errors_naming_the_variable() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_masking_braces");
    let pb = playbook(BRACES);
    let dir_arg = format!("dir={dir}");
    let out = run(lab, &pb.path, &lab_inventory(lab), &["-e", &dir_arg]);
    assert_eq!(out.code, 0, "{}", out.show());
    assert_eq!(
        lab.ssh_ok("podc01", &format!("cat {dir}/got")),
        "gen{{er%}ated-secret|lit{{eral%}-secret"
    );
    assert!(!out.stdout.contains("-secret"), "{}", out.show());

    let pb = playbook(BROKEN);
    let out = run(lab, &pb.path, &lab_inventory(lab), &["--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(!out.stdout.contains("ken-secret"), "{}", out.show());
    let r = &out.results("Any")[0];
    assert_eq!(r["error"]["code"], "troupe::render::var", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("in the value of variable `broken`: syntax error"),
        "{message}"
    );
}
