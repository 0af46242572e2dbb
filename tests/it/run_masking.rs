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
    task "Long" ignore-errors=#true { copy content="x" dest="/nonexistent/{{ long }}/x" }
    task "Quoted" { command { argv "echo" "{{ sq }}"; }; }
    task "Cut" { command "echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx {{ cut }}" }
    task "Registered" { command { argv "echo" "{{ dq }}"; }; register "r" }
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

/// `.troupe-tmp.` + 16 hex digits → `.troupe-tmp.[HEX]`: the temp name differs per run.
fn without_temp_names(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(".troupe-tmp.") {
        let end = i + ".troupe-tmp.".len();
        out.push_str(&rest[..end]);
        out.push_str("[HEX]");
        rest = &rest[end..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
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
    let text = without_temp_names(&filtered(&human.stdout, pb.dir.path()));
    let text: Vec<&str> = text.lines().map(str::trim_end).collect();
    let text = text.join("\n");
    insta::assert_snapshot!(text, @r#"
    PLAY [Forms] podc01

    TASK [Long] [TMP]/play.kdl:9:5
    failed: [podc01] (failure ignored)
        troupe::conn::io

          × podc01: cannot write /nonexistent/********/x: sh: 7: eval: cannot create /nonexistent/
          │ ********/.troupe-tmp.[HEX]: Directory nonexistent

    TASK [Quoted] [TMP]/play.kdl:10:5
    changed: [podc01] run: echo '********'

    TASK [Cut] [TMP]/play.kdl:11:5
    changed: [podc01] run: echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx ********…

    TASK [Registered] [TMP]/play.kdl:12:5
    changed: [podc01] run: echo '********'

    TASK [Debug] [TMP]/play.kdl:13:5
    ok: [podc01] r = {"rc":0,"stdout":"********","stderr":"","stdout_lines":["********"],"cmd":"echo '********'","changed":true,"failed":false,"msg":"run: echo '********'"}

    RECAP
    podc01  ok=1   changed=3   failed=0   unreachable=0   skipped=0 ignored=1
    OK: 1 hosts, 1 ok, 3 changed, 0 failed, 0 unreachable, 0 skipped in [ELAPSED]
    "#);
}
