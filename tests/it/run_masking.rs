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
