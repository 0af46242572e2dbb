//! Ansible's filters and tests (issue 16, "Expressions"): each one's result on
//! ordinary input as Ansible documents it, and the error a wrong input gives.

use serde_json::{Value, json};
use troupe_render::{Context, RenderError, Renderer};

fn ctx() -> Context {
    let vars = json!({
        "base": {"a": 1, "nested": {"x": 1, "list": [1, 2]}},
        "over": {"b": 2, "nested": {"y": 2, "list": [2, 3]}},
        "ok_result": {"changed": false, "failed": false, "rc": 0},
        "changed_result": {"changed": true, "failed": false},
        "failed_result": {"changed": false, "failed": true, "msg": "boom"},
        "skipped_result": {"changed": false, "skipped": true, "skip_reason": "`when` is false"},
        "loop_result": {"changed": true, "failed": false, "skipped": false, "results": []},
        "etcd_version": "3.5.17",
    });
    let Value::Object(map) = vars else { unreachable!() };
    Context::new(map.into_iter().collect())
}

fn eval(expr: &str) -> Value {
    Renderer::new(vec![])
        .eval(expr, &ctx())
        .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
}

fn render(src: &str) -> String {
    Renderer::new(vec![])
        .render_str(src, &ctx())
        .unwrap_or_else(|e| panic!("{src}: {e:?}"))
}

/// The error message of an expression that must fail.
fn fails(expr: &str) -> String {
    match Renderer::new(vec![]).eval(expr, &ctx()) {
        Ok(v) => panic!("{expr} evaluated to {v}"),
        Err(e @ RenderError::Eval { .. }) => e.to_string(),
        Err(e) => panic!("{expr}: not an evaluation error: {e:?}"),
    }
}

#[test]
fn combine_merges_maps_shallow_or_deep_with_list_strategies() {
    assert_eq!(
        eval("base | combine(over)"),
        json!({"a": 1, "nested": {"y": 2, "list": [2, 3]}, "b": 2})
    );
    assert_eq!(
        eval("base | combine(over, recursive=true)"),
        json!({"a": 1, "nested": {"x": 1, "list": [2, 3], "y": 2}, "b": 2})
    );
    assert_eq!(
        eval("base | combine(over, recursive=true, list_merge='append')")
            .pointer("/nested/list")
            .cloned(),
        Some(json!([1, 2, 2, 3]))
    );
    assert_eq!(
        eval("base | combine(over, recursive=true, list_merge='append_rp')")
            .pointer("/nested/list")
            .cloned(),
        Some(json!([1, 2, 3]))
    );
    assert_eq!(
        eval("base | combine(over, recursive=true, list_merge='prepend_rp')")
            .pointer("/nested/list")
            .cloned(),
        Some(json!([2, 3, 1]))
    );
    assert_eq!(
        eval("base | combine(over, recursive=true, list_merge='keep')")
            .pointer("/nested/list")
            .cloned(),
        Some(json!([1, 2]))
    );
    assert_eq!(
        eval("[{'a': 1}, {'a': 2}, {'b': 3}] | combine"),
        json!({"a": 2, "b": 3})
    );
    assert_eq!(eval("{'a': 1} | combine({'a': 2}, {'a': 3})"), json!({"a": 3}));
    assert!(fails("base | combine('x')").contains("combine expects maps"));
    assert!(fails("base | combine(over, list_merge='merge')").contains("list_merge must be one of"));
}

#[test]
fn dict2items_and_items2dict_round_trip() {
    assert_eq!(
        eval("{'a': 1, 'b': 2} | dict2items"),
        json!([{"key": "a", "value": 1}, {"key": "b", "value": 2}])
    );
    assert_eq!(
        eval("{'a': 1} | dict2items(key_name='name', value_name='v')"),
        json!([{"name": "a", "v": 1}])
    );
    assert_eq!(eval("base | dict2items | items2dict"), eval("base"));
    assert_eq!(
        eval("[{'name': 'x', 'v': 1}] | items2dict(key_name='name', value_name='v')"),
        json!({"x": 1})
    );
    assert!(fails("[1, 2] | dict2items").contains("dict2items expects a map"));
    assert!(fails("[{'key': 'a'}] | items2dict").contains("item 0 has no `value`"));
}

#[test]
fn ternary_picks_by_truth_and_none() {
    assert_eq!(eval("(1 > 0) | ternary('yes', 'no')"), json!("yes"));
    assert_eq!(eval("'' | ternary('yes', 'no')"), json!("no"));
    assert_eq!(eval("none | ternary('yes', 'no', 'unset')"), json!("unset"));
    assert_eq!(eval("none | ternary('yes', 'no')"), json!("no"));
    assert!(matches!(
        Renderer::new(vec![]).eval("nope | ternary(1, 2)", &ctx()),
        Err(RenderError::Undefined { .. })
    ));
}

#[test]
fn flatten_and_the_set_filters_keep_first_order() {
    assert_eq!(
        eval("[1, [2, [3, [4]]], none, 'null', 5] | flatten"),
        json!([1, 2, 3, 4, 5])
    );
    assert_eq!(eval("[1, [2, [3, [4]]]] | flatten(1)"), json!([1, 2, [3, [4]]]));
    assert_eq!(eval("[1, [2, [3]]] | flatten(levels=2)"), json!([1, 2, 3]));
    assert_eq!(
        eval("[1, none, [none]] | flatten(skip_nulls=false)"),
        json!([1, null, null])
    );
    assert!(fails("'abc' | flatten").contains("flatten expects a list"));

    assert_eq!(
        eval("[1, 2, 5, 1, 3, 4, 10] | unique"),
        json!([1, 2, 5, 3, 4, 10])
    );
    assert_eq!(eval("[3, 1, 2, 3] | difference([2, 4])"), json!([3, 1]));
    assert_eq!(eval("[3, 1, 2, 3] | intersect([2, 3, 4])"), json!([3, 2]));
    assert_eq!(eval("[3, 1] | union([1, 2, 2])"), json!([3, 1, 2]));
    assert_eq!(eval("[1, 2, 3] | symmetric_difference([3, 4])"), json!([1, 2, 4]));
    assert_eq!(eval("[1, 2] | intersect([2.0])"), json!([2]), "Python's 2 == 2.0");
    assert!(fails("[1] | union(3)").contains("union expects a list as its argument"));
}

#[test]
fn regex_search_and_findall_follow_python() {
    assert_eq!(
        eval("'server1/database42' | regex_search('database[0-9]+')"),
        json!("database42")
    );
    assert_eq!(
        eval("'server1/database42' | regex_search('nothing')"),
        Value::Null
    );
    assert_eq!(
        eval(r#"'server1/database42' | regex_search('server([0-9]+)/database([0-9]+)', '\\1', '\\2')"#),
        json!(["1", "42"])
    );
    assert_eq!(
        eval(r#"'etcd-3.5.17' | regex_search('(?P<major>\\d+)\\.(?P<minor>\\d+)', '\\g<minor>')"#),
        json!(["5"])
    );
    assert_eq!(eval("'FOO' | regex_search('foo', ignorecase=true)"), json!("FOO"));
    assert_eq!(
        eval("'a\\nfoo' | regex_search('^foo', multiline=true)"),
        json!("foo")
    );
    assert_eq!(eval("'a\\nfoo' | regex_search('^foo')"), Value::Null);
    assert!(fails(r#"'x' | regex_search('(x)', '\\2')"#).contains("no group 2"));
    assert!(fails("'x' | regex_search('(')").contains("invalid regular expression"));

    assert_eq!(
        eval("'CAR\\ntar\\nfoo\\nbar\\n' | regex_findall('^.ar$', multiline=true, ignorecase=true)"),
        json!(["CAR", "tar", "bar"])
    );
    assert_eq!(
        eval("'a=1 b=2' | regex_findall('(\\\\w)=(\\\\d)')"),
        json!([["a", "1"], ["b", "2"]])
    );
    assert_eq!(
        eval("'a=1 b=2' | regex_findall('\\\\w=(\\\\d)')"),
        json!(["1", "2"])
    );
    assert_eq!(
        eval("'https://10.1.1.201:2379' | regex_replace('^https://([^:]+):\\\\d+$', '\\\\1')"),
        json!("10.1.1.201")
    );
}

#[test]
fn json_and_yaml_text_parse_and_print() {
    assert_eq!(eval(r#"'{"a": [1, 2]}' | from_json"#), json!({"a": [1, 2]}));
    assert_eq!(
        eval("'a: [1, 2]\\nb: x' | from_yaml"),
        json!({"a": [1, 2], "b": "x"})
    );
    assert_eq!(
        eval("'a: 1\\n---\\nb: 2\\n' | from_yaml_all"),
        json!([{"a": 1}, {"b": 2}])
    );
    assert_eq!(eval("base | from_json"), eval("base"), "non-strings pass through");
    assert!(fails("'{' | from_json").contains("from_json: not valid JSON"));
    assert!(fails("'a: [' | from_yaml").contains("from_yaml: not valid YAML"));

    assert_eq!(
        render(
            "{{ {'z': 1, 'a': {'k': 'yes', 'l': [1, {'m': 2, 'o': 3}]}, 'e': [], 'f': {}} | to_nice_yaml }}"
        ),
        "a:\n    k: \"yes\"\n    l:\n    - 1\n    -   m: 2\n        o: 3\ne: []\nf: {}\nz: 1\n"
    );
    assert_eq!(
        render("{{ {'z': 1, 'a': [[1, 2]]} | to_nice_yaml(indent=2, sort_keys=false) }}"),
        "z: 1\na:\n- - 1\n  - 2\n"
    );
    let text = render("{{ base | combine(over, recursive=true) | to_nice_yaml }}");
    let back: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(back, eval("base | combine(over, recursive=true)"));
}

#[test]
fn hashes_are_hex_digests() {
    assert_eq!(
        eval("'etcd' | hash"),
        json!("68b23659ff9df925e456f91773e5a3c77bea7c93")
    );
    assert_eq!(
        eval("'etcd' | hash('md5')"),
        json!("a226e9fbdfc1c8dd7e7fef4d333f86ed")
    );
    assert_eq!(
        eval("'etcd' | hash('sha256')"),
        json!("c38cbd92fce41312f3fbdce60510013b7f0d4004a03b45c8e762f98f1ed4006c")
    );
    assert_eq!(eval("'etcd' | hash('sha512')").as_str().unwrap().len(), 128);
    assert!(fails("'etcd' | hash('whirlpool')").contains("unknown algorithm `whirlpool`"));
}

/// The hash is checked by the real crypt: openssl's `passwd` and Python-free glibc
/// both write SHA-512-crypt; here `openssl passwd -6` must produce the same string
/// from the same salt.
#[test]
fn password_hash_is_sha512_crypt_as_openssl_writes_it() {
    let ours = eval("'s3cr3t' | password_hash('sha512', 'Rnd0mSalt')");
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", "Rnd0mSalt", "s3cr3t"])
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    assert_eq!(ours, json!(String::from_utf8(out.stdout).unwrap().trim_end()));

    let a = eval("'s3cr3t' | password_hash");
    let b = eval("'s3cr3t' | password_hash");
    let a = a.as_str().unwrap();
    assert!(a.starts_with("$6$") && a.len() == 3 + 16 + 1 + 86, "{a}");
    assert_ne!(json!(a), b, "a random salt each time");
    assert!(
        eval("'x' | password_hash('sha256', rounds=6000)")
            .as_str()
            .unwrap()
            .starts_with("$5$rounds=6000$")
    );
    assert!(fails("'x' | password_hash('bcrypt')").contains("unsupported scheme `bcrypt`"));
    assert!(fails("'x' | password_hash(salt='bad salt')").contains("a salt is 1 to 16 characters"));
    assert!(fails("'x' | password_hash(rounds=10)").contains("rounds must be between"));
}

#[test]
fn ipaddr_takes_parts_of_an_address() {
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('network')"), json!("10.0.0.0"));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('address')"), json!("10.0.0.5"));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('prefix')"), json!(24));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('netmask')"), json!("255.255.255.0"));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('broadcast')"), json!("10.0.0.255"));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('subnet')"), json!("10.0.0.0/24"));
    assert_eq!(eval("'10.0.0.5/24' | ipaddr('host')"), json!("10.0.0.5/24"));
    assert_eq!(
        eval("'10.0.0.5/255.255.0.0' | ipaddr('network/prefix')"),
        json!("10.0.0.0/16")
    );
    assert_eq!(
        eval("'10.0.0.0/24' | ipaddr('address')"),
        json!(false),
        "a network, not an address"
    );
    assert_eq!(eval("'10.0.0.0/24' | ipaddr('1')"), json!("10.0.0.1/24"));
    assert_eq!(eval("'10.0.0.0/24' | ipaddr('-1')"), json!("10.0.0.255/24"));
    assert_eq!(eval("'10.0.0.0/24' | ipaddr('size')"), json!(256));
    assert_eq!(eval("'10.1.1.201' | ipaddr"), json!("10.1.1.201"));
    assert_eq!(eval("'podc01' | ipaddr"), json!(false));
    assert_eq!(eval("'2001:db8::5/64' | ipaddr('network')"), json!("2001:db8::"));
    assert_eq!(eval("'2001:db8::5/64' | ipaddr('prefix')"), json!(64));
    assert_eq!(
        eval("['10.1.1.201', 'podc01', '::1', '192.168.0.1'] | ipv4"),
        json!(["10.1.1.201", "192.168.0.1"])
    );
    assert_eq!(eval("['10.1.1.201', '::1'] | ipv6"), json!(["::1"]));
    assert_eq!(
        eval("['10.1.1.201', '192.168.0.1'] | ipaddr('10.0.0.0/8')"),
        json!(["10.1.1.201"])
    );
    assert!(
        eval("'10.0.0.5/24' | ipaddr('address') and '10.0.0.5/24' | ipaddr('network') == '10.0.0.0'")
            .as_bool()
            .unwrap()
    );
    assert!(fails("'10.0.0.5/24' | ipaddr('nonsense')").contains("unknown query `nonsense`"));
}

#[test]
fn result_tests_read_registered_flags() {
    let r = Renderer::new(vec![]);
    let is = |e: &str| r.is_true(e, &ctx()).unwrap_or_else(|err| panic!("{e}: {err:?}"));
    assert!(is("changed_result is changed"));
    assert!(!is("ok_result is changed"));
    assert!(is("ok_result is not changed"));
    assert!(is("failed_result is failed"));
    assert!(!is("failed_result is succeeded"));
    assert!(is("ok_result is succeeded and ok_result is success"));
    assert!(is("skipped_result is skipped"));
    assert!(!is("ok_result is skipped"));
    assert!(is("loop_result is changed"));
    let err = r.is_true("etcd_version is changed", &ctx()).unwrap_err();
    assert!(err.to_string().contains("expects a registered result"), "{err}");
    assert!(matches!(
        r.is_true("nope is failed", &ctx()),
        Err(RenderError::Undefined { .. })
    ));
}

#[test]
fn version_compares_loose_and_semver() {
    let r = Renderer::new(vec![]);
    let is = |e: &str| r.is_true(e, &ctx()).unwrap_or_else(|err| panic!("{e}: {err:?}"));
    assert!(is("etcd_version is version('3.4', '>=')"));
    assert!(is("etcd_version is version('3.5.9', 'gt')"));
    assert!(!is("etcd_version is version('3.10', '>=')"));
    assert!(is("'3.4' is version('3.4')"));
    assert!(is("'3.4' is version('3.4.0', '<')"));
    assert!(is("etcd_version is version('3.5.17', operator='eq')"));
    assert!(is("'1.2.3-rc.1' is version('1.2.3', '<', version_type='semver')"));
    assert!(is("etcd_version is not version('3.6', '>=')"));
    assert!(fails("etcd_version is version('3.4', '=>')").contains("unknown operator `=>`"));
    assert!(fails("'1.x' is version('1.2', '<', version_type='semver')").contains("not a semantic version"));
    assert!(fails("'1' is version('1', version_type='pep440')").contains("not supported"));
}

#[test]
fn the_checker_knows_every_new_name() {
    let r = Renderer::new(vec![]);
    let src = "{{ a | combine(b) | dict2items | items2dict | flatten | unique | difference(c) | union(c) \
               | intersect(c) | symmetric_difference(c) | ternary(1, 2) | regex_search('x') | regex_findall('x') \
               | from_json | from_yaml | from_yaml_all | to_nice_yaml | hash | password_hash | ipaddr | ipv4 \
               | ipv6 | b64encode | b64decode }}{{ r is changed or r is failed or r is skipped or r is succeeded \
               or v is version('1') }}";
    assert_eq!(r.unknown_names(src, false), []);
}
