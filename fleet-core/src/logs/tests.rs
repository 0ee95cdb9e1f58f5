use super::*;

#[test]
fn interleaved_sources_keep_their_own_partial_lines() {
    let mut t = LogTail::new(10);
    assert!(t.push(LogSource::Proxy, "[INFO] swapping to q").is_empty());
    let up = t.push(LogSource::Upstream, "srv  load: 50%\r\nsrv  load: 10");
    assert_eq!(
        up,
        [LogLine {
            source: LogSource::Upstream,
            text: "srv  load: 50%".into()
        }]
    );
    let p = t.push(LogSource::Proxy, "wen\n");
    assert_eq!(p[0].text, "[INFO] swapping to qwen");
    t.push(LogSource::Upstream, "0%\n");
    let texts: Vec<String> = t.tail(5).into_iter().map(|l| l.text).collect();
    assert_eq!(
        texts,
        [
            "srv  load: 50%",
            "[INFO] swapping to qwen",
            "srv  load: 100%"
        ]
    );
}

#[test]
fn keeps_only_the_last_cap_lines() {
    let mut t = LogTail::default();
    let history: String = (0..2_500).map(|i| format!("line {i}\n")).collect();
    let done = t.push(LogSource::Proxy, &history);
    assert_eq!(done.len(), 2_500);
    assert_eq!(t.len(), 2_000);
    assert_eq!(t.lines().next().map(|l| l.text.as_str()), Some("line 500"));
    assert_eq!(t.tail(1)[0].text, "line 2499");
    assert_eq!(t.tail(10_000).len(), 2_000);
}

#[test]
fn an_endless_partial_line_is_flushed() {
    let mut t = LogTail::new(4);
    let big = "x".repeat(MAX_PARTIAL + 1);
    let done = t.push(LogSource::Upstream, &big);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].text.len(), MAX_PARTIAL + 1);
    assert!(t.push(LogSource::Upstream, "next\n")[0].text == "next");
}
