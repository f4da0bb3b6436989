struct Report {
    lines: Vec<String>,
}

#[larder::memoize]
fn report(n: u32) -> Report {
    Report {
        lines: vec![n.to_string()],
    }
}

fn main() {}
