//! Does a borrower have a native driver for a device? Match the device's `modalias` against the
//! borrower's `modules.alias` (loadable modules) and `modules.builtin.modinfo` (built-in drivers), the
//! way udev/modprobe do: shell-style globs (`*`, `?`, `[...]`).

/// One alias pattern and the module it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Glob over the modalias string, e.g. `pci:v00008086d*sv*sd*bc02sc00i*`.
    pub pattern: String,
    /// Module name.
    pub module: String,
}

/// Parses `modules.alias` text (`alias PATTERN MODULE`, `#` comments); only `pci:` aliases are kept.
pub fn parse_modules_alias(text: &str) -> Vec<Alias> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            (f.next()? == "alias").then_some(())?;
            let pattern = f.next()?;
            let module = f.next()?;
            pattern.starts_with("pci:").then(|| Alias {
                pattern: pattern.to_owned(),
                module: module.to_owned(),
            })
        })
        .collect()
}

/// Parses `modules.builtin.modinfo` (NUL-separated `module.key=value` records); keeps `alias=pci:...`.
pub fn parse_builtin_modinfo(bytes: &[u8]) -> Vec<Alias> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|record| {
            let record = std::str::from_utf8(record).ok()?;
            let (key, value) = record.split_once('=')?;
            let module = key.strip_suffix(".alias")?;
            value.starts_with("pci:").then(|| Alias {
                pattern: value.to_owned(),
                module: module.to_owned(),
            })
        })
        .collect()
}

/// Shell glob match with `*`, `?` and `[...]` (ranges, `!`/`^` negation), iterative with one backtrack
/// point, so hostile patterns cannot make it exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => class_match(&p, pi, t[ti]),
            Some(c) if *c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns the index after `]`.
fn class_match(p: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&pc) = p.get(i) {
        if pc == ']' && !first {
            return (matched != negate).then_some(i + 1);
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
            let end = p[i + 2];
            matched |= (pc..=end).contains(&c);
            i += 3;
        } else {
            matched |= pc == c;
            i += 1;
        }
    }
    // Unterminated class: treat '[' literally.
    (c == '[').then_some(start + 1)
}

/// The first module whose alias matches `modalias`.
pub fn find_driver<'a>(modalias: &str, aliases: &'a [Alias]) -> Option<&'a str> {
    aliases
        .iter()
        .find(|a| glob_match(&a.pattern, modalias))
        .map(|a| a.module.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVME: &str = "pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02";

    #[test]
    fn class_alias_matches_nvme() {
        let aliases = parse_modules_alias("alias pci:v*d*sv*sd*bc01sc08i02* nvme\n");
        assert_eq!(find_driver(NVME, &aliases), Some("nvme"));
    }

    #[test]
    fn vendor_alias_for_other_vendor_does_not_match() {
        let aliases = parse_modules_alias("alias pci:v000015B3d00001017sv*sd*bc*sc*i* mlx5_core\n");
        assert_eq!(find_driver(NVME, &aliases), None);
    }

    #[test]
    fn builtin_modinfo_aliases_are_read() {
        let aliases =
            parse_builtin_modinfo(b"nvme.license=GPL\0nvme.alias=pci:v*d*sv*sd*bc01sc08i02*\0");
        assert_eq!(find_driver(NVME, &aliases), Some("nvme"));
    }

    #[test]
    fn glob_character_class_and_negation() {
        assert_eq!(
            (glob_match("a[0-9]c", "a5c"), glob_match("a[!0-9]c", "a5c")),
            (true, false)
        );
    }

    #[test]
    fn glob_many_stars_stays_linear_enough() {
        let pattern = "*a*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(200);
        assert!(!glob_match(pattern, &text));
    }

    #[test]
    fn non_pci_aliases_are_ignored() {
        assert_eq!(
            parse_modules_alias("alias usb:v*p* usbcore\nalias\n").len(),
            0
        );
    }
}
