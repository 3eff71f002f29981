//! Where each node of a YAML document is: an index from YAML path (`apis[0].upstream`) to
//! (line, column), built from the event stream of a YAML parser that keeps positions.
//!
//! `serde_yaml::Value` carries no positions, so validation walks the value and looks the
//! line up here by path. A mapping member's position is where its key is written; a
//! sequence item's is where the item starts. Lines and columns are 1-based.

use saphyr_parser::{Event, Parser};
use std::collections::{HashMap, HashSet};

/// Path → (line, column) of the first document of a YAML text.
#[derive(Debug, Default)]
pub(crate) struct PosIndex {
    positions: HashMap<String, (usize, usize)>,
    /// Keys written twice in one mapping: (path, line, column) of the second occurrence.
    duplicates: Vec<(String, usize, usize)>,
}

enum Frame {
    Seq {
        path: String,
        next: usize,
    },
    Map {
        path: String,
        /// The key whose value comes next (None: a key comes next).
        key: Option<String>,
        seen: HashSet<String>,
    },
}

/// Appends a mapping key to a path.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a sequence index to a path.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// The parent of a path (`a.b[2]` → `a.b` → `a` → ``), None for the root.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        if let Some(open) = path.rfind('[') {
            return Some(&path[..open]);
        }
    }
    match path.rfind(['.', '[']) {
        Some(pos) => Some(&path[..pos]),
        None => Some(""),
    }
}

impl PosIndex {
    /// Indexes `text`. A syntax error stops the walk; what was seen before it stays indexed.
    pub(crate) fn build(text: &str) -> PosIndex {
        let mut index = PosIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Depth inside a complex (non-scalar) mapping key, which gets no path.
        let mut skip = 0usize;
        let mut documents = 0usize;
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = (span.start.line(), span.start.col() + 1);
            let starts_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                }
                Event::MappingEnd | Event::SequenceEnd if skip > 0 => {
                    skip -= 1;
                    if skip == 0 {
                        // The complex key is over; its value comes next.
                        if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                            *key = Some(String::from("?"));
                        }
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) if skip > 0 => skip += 1,
                _ if skip > 0 => {}
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ if starts_node => {
                    // Which path does this node have?
                    let path = match stack.last_mut() {
                        None => Some(String::new()),
                        Some(Frame::Seq { path, next }) => {
                            let p = join_index(path, *next);
                            *next += 1;
                            Some(p)
                        }
                        Some(Frame::Map { path, key, seen }) => match key.take() {
                            Some(k) => Some(join_key(path, &k)),
                            None => {
                                // This node is a key.
                                match &event {
                                    Event::Scalar(value, ..) => {
                                        let key_path = join_key(path, value);
                                        if !seen.insert(value.to_string()) {
                                            index.duplicates.push((key_path.clone(), pos.0, pos.1));
                                        }
                                        index.positions.entry(key_path).or_insert(pos);
                                        *key = Some(value.to_string());
                                    }
                                    Event::Alias(_) => *key = Some(String::from("?")),
                                    _ => skip = 1,
                                }
                                continue;
                            }
                        },
                    };
                    let Some(path) = path else { continue };
                    index.positions.entry(path.clone()).or_insert(pos);
                    match event {
                        Event::MappingStart(..) => stack.push(Frame::Map {
                            path,
                            key: None,
                            seen: HashSet::new(),
                        }),
                        Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        index
    }

    /// Where the second document of `text` starts (line, column), if it has one.
    pub(crate) fn second_document(text: &str) -> Option<(usize, usize)> {
        let mut parser = Parser::new_from_str(text);
        let mut documents = 0usize;
        while let Some(Ok((event, span))) = parser.next_event() {
            if let Event::DocumentStart(_) = event {
                documents += 1;
                if documents == 2 {
                    return Some((span.start.line(), span.start.col() + 1));
                }
            }
        }
        None
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub(crate) fn lookup(&self, path: &str) -> Option<(usize, usize)> {
        let mut current = Some(path);
        while let Some(p) = current {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            current = parent(p);
        }
        None
    }

    /// The first key written twice in one mapping: (path, line, column).
    pub(crate) fn first_duplicate(&self) -> Option<&(String, usize, usize)> {
        self.duplicates.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
apis:
  - id: a
    path: /x
    ops: [ {a: 1}, b ]
  - rate-limit: { calls: 5 }
    list:
    - one
    - two
";

    #[test]
    fn block_and_flow_positions() {
        let index = PosIndex::build(DOC);
        assert_eq!(index.lookup(""), Some((1, 1)));
        assert_eq!(index.lookup("version"), Some((1, 1)));
        assert_eq!(index.lookup("apis"), Some((2, 1)));
        assert_eq!(index.lookup("apis[0]"), Some((3, 5)));
        assert_eq!(index.lookup("apis[0].path"), Some((4, 5)));
        assert_eq!(index.lookup("apis[0].ops[0]"), Some((5, 12)));
        assert_eq!(index.lookup("apis[0].ops[0].a"), Some((5, 13)));
        assert_eq!(index.lookup("apis[0].ops[1]"), Some((5, 20)));
        assert_eq!(index.lookup("apis[1].rate-limit.calls"), Some((6, 19)));
        assert_eq!(index.lookup("apis[1].list[1]"), Some((9, 7)));
    }

    #[test]
    fn missing_paths_fall_back_to_ancestors() {
        let index = PosIndex::build(DOC);
        assert_eq!(
            index.lookup("apis[1].rate-limit.renewal_period"),
            Some((6, 5))
        );
        assert_eq!(index.lookup("apis[7].x"), Some((2, 1)));
        assert_eq!(index.lookup("nothing"), Some((1, 1)));
    }

    #[test]
    fn complex_keys_and_duplicates() {
        let index = PosIndex::build("a:\n  ? [x, y]\n  : 1\n  b: 2\n  b: 3\n");
        assert_eq!(index.lookup("a.b"), Some((4, 3)));
        assert_eq!(index.first_duplicate(), Some(&("a.b".to_string(), 5, 3)));
    }

    #[test]
    fn syntax_errors_keep_what_came_before() {
        let index = PosIndex::build("a: 1\nb: [1\nc: 2\n");
        assert_eq!(index.lookup("a"), Some((1, 1)));
    }

    #[test]
    fn json_positions() {
        let index =
            PosIndex::build("{\n  \"version\": 1,\n  \"apis\": [\n    {\"id\": \"a\"}\n  ]\n}\n");
        assert_eq!(index.lookup("apis"), Some((3, 3)));
        assert_eq!(index.lookup("apis[0].id"), Some((4, 6)));
    }
}
