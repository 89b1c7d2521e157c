//! Kernel function (kfunc) calls in the eBPF object, resolved for the running kernel
//! before aya sees the object.
//!
//! bpf-linker 0.13 leaves a call to an `extern "C"` function of the eBPF crate
//! (ingress-ebpf/src/kfunc.rs) as `call -1` (`BPF_JMP|BPF_CALL`, src_reg
//! `BPF_PSEUDO_CALL`) with an `R_BPF_64_32` relocation against an undefined ELF symbol
//! of the function's name, and emits no BTF for it. aya 0.14 / aya-obj 0.3 treat every
//! `BPF_PSEUDO_CALL` as a call to a function of the object, so loading such an object
//! fails (`UnknownFunction`). [`patch`] rewrites each such call in the ELF bytes into
//! what libbpf produces for a `__ksym` kfunc: src_reg `BPF_PSEUDO_KFUNC_CALL`, imm = the
//! function's BTF type id in vmlinux, off 0 (vmlinux, not a module). aya then leaves the
//! instruction alone (it is no longer a pseudo call, and an undefined symbol is neither
//! a map nor text), and the verifier checks the call against the kernel's own BTF
//! prototype of the function and the program type's kfunc set.
//!
//! A name the kernel does not have becomes `r0 = -EOPNOTSUPP` (one instruction, like
//! the call), so the rest of the object still loads on older kernels; the programs
//! that need it are then not loaded ([`Patched::missing`] says which names). Pure: the
//! caller passes the resolver ([`vmlinux_resolver`] reads the running kernel's BTF).

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

/// `bpf_insn` fields (include/uapi/linux/bpf.h).
const INSN_SIZE: usize = 8;
const BPF_JMP_CALL: u8 = 0x85; // BPF_JMP | BPF_CALL | BPF_K
const BPF_ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
pub const BPF_PSEUDO_CALL: u8 = 1;
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const EOPNOTSUPP: i32 = 95;

/// One call to a kernel function found in the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KfuncCall {
    /// The function's name (the undefined symbol).
    pub name: String,
    /// ELF section of the calling program (`classifier`, `xdp`, ...).
    pub section: String,
    /// Index of the call instruction in that section.
    pub insn: usize,
    /// The BTF id it was resolved to; `None`: the kernel has no such function and the
    /// call became `r0 = -EOPNOTSUPP`.
    pub btf_id: Option<u32>,
}

/// The object with its kfunc calls resolved.
#[derive(Clone, Debug)]
pub struct Patched {
    pub object: Vec<u8>,
    pub calls: Vec<KfuncCall>,
}

impl Patched {
    /// Names of the kernel functions the running kernel lacks (sorted, once each).
    pub fn missing(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.calls.iter().filter(|c| c.btf_id.is_none()).map(|c| c.name.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KfuncError {
    #[error("the eBPF object is not a readable ELF file: {0}")]
    Elf(String),
    #[error(
        "the eBPF object refers to undefined symbol `{name}` at instruction {insn} of section {section}, which is not a call: only kernel function calls can be resolved (kernel variables, `__ksym` data, are not supported)"
    )]
    NotACall { name: String, section: String, insn: usize },
}

/// The names of the undefined functions the object's programs call, sorted, once each.
pub fn kfunc_names(elf: &[u8]) -> Result<Vec<String>, KfuncError> {
    let mut names: Vec<String> = find_calls(elf)?.into_iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// A call site: where the instruction is in the file, and what it calls.
struct Site {
    name: String,
    section: String,
    insn: usize,
    file_offset: usize,
    /// Already rewritten: the BTF id it calls, or `None` for `r0 = -EOPNOTSUPP`.
    done: Option<Option<u32>>,
}

fn find_calls(elf: &[u8]) -> Result<Vec<KfuncCall>, KfuncError> {
    Ok(sites(elf)?
        .into_iter()
        .map(|s| KfuncCall { name: s.name, section: s.section, insn: s.insn, btf_id: None })
        .collect())
}

fn sites(elf: &[u8]) -> Result<Vec<Site>, KfuncError> {
    let file = object::File::parse(elf).map_err(|e| KfuncError::Elf(e.to_string()))?;
    let mut out = Vec::new();
    for section in file.sections() {
        if section.kind() != SectionKind::Text {
            continue;
        }
        let Some((start, size)) = section.file_range() else { continue };
        let section_name = section.name().unwrap_or("?").to_string();
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(index) = rel.target() else { continue };
            let Ok(sym) = file.symbol_by_index(index) else { continue };
            if !sym.is_undefined() {
                continue;
            }
            let name = sym.name().map_err(|e| KfuncError::Elf(e.to_string()))?.to_string();
            let insn = offset as usize / INSN_SIZE;
            let at = offset as usize;
            if at % INSN_SIZE != 0 || at + INSN_SIZE > size as usize {
                return Err(KfuncError::Elf(format!("relocation at {at} outside section {section_name}")));
            }
            let file_offset = start as usize + at;
            let code = elf[file_offset];
            let src = elf[file_offset + 1] >> 4;
            let imm = i32::from_le_bytes(elf[file_offset + 4..file_offset + 8].try_into().expect("4 bytes"));
            let done = match (code, src) {
                (BPF_JMP_CALL, BPF_PSEUDO_CALL) => None,
                // patched already (an object that went through [`patch`])
                (BPF_JMP_CALL, BPF_PSEUDO_KFUNC_CALL) => Some(Some(imm as u32)),
                (BPF_ALU64_MOV_K, 0) if elf[file_offset + 1] == 0 && imm == -EOPNOTSUPP => Some(None),
                _ => return Err(KfuncError::NotACall { name, section: section_name, insn }),
            };
            out.push(Site { name, section: section_name.clone(), insn, file_offset, done });
        }
    }
    Ok(out)
}

/// Rewrites every call to an undefined function: `resolve(name)` gives its BTF id in
/// vmlinux (a kfunc call), `None` gives `r0 = -EOPNOTSUPP`. Calls rewritten before (an
/// object patched already) are kept as they are and reported as they were resolved.
pub fn patch(elf: &[u8], resolve: &mut dyn FnMut(&str) -> Option<u32>) -> Result<Patched, KfuncError> {
    let sites = sites(elf)?;
    let mut object = elf.to_vec();
    let mut calls = Vec::with_capacity(sites.len());
    for s in sites {
        if let Some(id) = s.done {
            calls.push(KfuncCall { name: s.name, section: s.section, insn: s.insn, btf_id: id });
            continue;
        }
        let id = resolve(&s.name);
        let insn = &mut object[s.file_offset..s.file_offset + INSN_SIZE];
        match id {
            Some(id) => {
                // code, dst_reg 0 | src_reg KFUNC_CALL << 4, off 0 (vmlinux), imm = BTF id
                insn[0] = BPF_JMP_CALL;
                insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                insn[2..4].copy_from_slice(&0i16.to_le_bytes());
                insn[4..8].copy_from_slice(&(id as i32).to_le_bytes());
            }
            None => {
                insn[0] = BPF_ALU64_MOV_K;
                insn[1] = 0; // r0
                insn[2..4].copy_from_slice(&0i16.to_le_bytes());
                insn[4..8].copy_from_slice(&(-EOPNOTSUPP).to_le_bytes());
            }
        }
        calls.push(KfuncCall { name: s.name, section: s.section, insn: s.insn, btf_id: id });
    }
    Ok(Patched { object, calls })
}

/// A resolver over the running kernel's BTF (`/sys/kernel/btf/vmlinux`): the id of the
/// `FUNC` of that name. `None` when the kernel has no BTF (every call then falls back).
pub fn vmlinux_resolver() -> Option<aya::Btf> {
    aya::Btf::from_sys_fs().ok()
}

/// The BTF id of function `name` in `btf`.
pub fn func_id(btf: &aya::Btf, name: &str) -> Option<u32> {
    btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func).ok()
}

/// Patches `elf` for the running kernel (its vmlinux BTF, parsed once and dropped).
pub fn patch_for_running_kernel(elf: &[u8]) -> Result<Patched, KfuncError> {
    let btf = vmlinux_resolver();
    patch(elf, &mut |name| btf.as_ref().and_then(|b| func_id(b, name)))
}

/// Whether the running kernel's BTF has each of `names` as a function (`None`: no BTF).
pub fn kernel_has_functions(names: &[&str]) -> Option<Vec<bool>> {
    let btf = vmlinux_resolver()?;
    Some(names.iter().map(|n| func_id(&btf, n).is_some()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal little-endian ELF64 relocatable object for EM_BPF: a text section
    /// `classifier` with `insns`, its REL section with one R_BPF_64_32 per `(insn,
    /// symbol)`, and a symbol table with the undefined symbols `undefined` plus one
    /// defined function `helper` (symbol index `undefined.len() + 1`) in the section.
    fn elf(insns: &[[u8; 8]], rels: &[(usize, usize)], undefined: &[&str]) -> Vec<u8> {
        let text: Vec<u8> = insns.iter().flatten().copied().collect();
        // strtab: "\0" then names
        let mut strtab = vec![0u8];
        let mut name_off = vec![];
        for n in undefined.iter().chain(["helper"].iter()) {
            name_off.push(strtab.len() as u32);
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let mut shstr = vec![0u8];
        let sh_name = |s: &str, shstr: &mut Vec<u8>| {
            let o = shstr.len() as u32;
            shstr.extend_from_slice(s.as_bytes());
            shstr.push(0);
            o
        };
        let n_text = sh_name("classifier", &mut shstr);
        let n_rel = sh_name(".relclassifier", &mut shstr);
        let n_sym = sh_name(".symtab", &mut shstr);
        let n_str = sh_name(".strtab", &mut shstr);
        let n_shstr = sh_name(".shstrtab", &mut shstr);
        // symtab: null, undefined (global, notype), helper (global func in section 1)
        let mut symtab = vec![0u8; 24];
        for (i, _) in undefined.iter().enumerate() {
            let mut s = vec![];
            s.extend_from_slice(&name_off[i].to_le_bytes());
            s.push(0x10); // STB_GLOBAL, STT_NOTYPE
            s.push(0);
            s.extend_from_slice(&0u16.to_le_bytes()); // SHN_UNDEF
            s.extend_from_slice(&[0; 16]);
            symtab.extend_from_slice(&s);
        }
        let mut s = vec![];
        s.extend_from_slice(&name_off[undefined.len()].to_le_bytes());
        s.push(0x12); // STB_GLOBAL, STT_FUNC
        s.push(0);
        s.extend_from_slice(&1u16.to_le_bytes());
        s.extend_from_slice(&[0; 16]);
        symtab.extend_from_slice(&s);
        let mut rel = vec![];
        for (insn, sym) in rels {
            rel.extend_from_slice(&((insn * 8) as u64).to_le_bytes());
            rel.extend_from_slice(&(((*sym as u64) << 32) | 10).to_le_bytes()); // R_BPF_64_32
        }
        // layout: header, sections' data, section headers
        let mut out = vec![0u8; 64];
        let place = |data: &[u8], out: &mut Vec<u8>| {
            while out.len() % 8 != 0 {
                out.push(0);
            }
            let o = out.len();
            out.extend_from_slice(data);
            (o as u64, data.len() as u64)
        };
        let t = place(&text, &mut out);
        let r = place(&rel, &mut out);
        let sy = place(&symtab, &mut out);
        let st = place(&strtab, &mut out);
        let sh = place(&shstr, &mut out);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let shoff = out.len() as u64;
        let hdr = |name: u32, ty: u32, flags: u64, (off, size): (u64, u64), link: u32, info: u32, entsize: u64| {
            let mut h = vec![];
            h.extend_from_slice(&name.to_le_bytes());
            h.extend_from_slice(&ty.to_le_bytes());
            h.extend_from_slice(&flags.to_le_bytes());
            h.extend_from_slice(&0u64.to_le_bytes()); // addr
            h.extend_from_slice(&off.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&link.to_le_bytes());
            h.extend_from_slice(&info.to_le_bytes());
            h.extend_from_slice(&8u64.to_le_bytes()); // align
            h.extend_from_slice(&entsize.to_le_bytes());
            h
        };
        out.extend_from_slice(&[0u8; 64]); // null section
        out.extend_from_slice(&hdr(n_text, 1, 0x6, t, 0, 0, 0)); // PROGBITS, ALLOC|EXECINSTR
        out.extend_from_slice(&hdr(n_rel, 9, 0x40, r, 3, 1, 16)); // REL -> symtab 3, applies to 1
        out.extend_from_slice(&hdr(n_sym, 2, 0, sy, 4, 1, 24)); // SYMTAB, strtab 4, first global 1
        out.extend_from_slice(&hdr(n_str, 3, 0, st, 0, 0, 0));
        out.extend_from_slice(&hdr(n_shstr, 3, 0, sh, 0, 0, 0));
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(16, 0);
        h.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        h.extend_from_slice(&247u16.to_le_bytes()); // EM_BPF
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // entry
        h.extend_from_slice(&0u64.to_le_bytes()); // phoff
        h.extend_from_slice(&shoff.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&64u16.to_le_bytes()); // shentsize
        h.extend_from_slice(&6u16.to_le_bytes()); // shnum
        h.extend_from_slice(&5u16.to_le_bytes()); // shstrndx
        out[..64].copy_from_slice(&h);
        out
    }

    const CALL: [u8; 8] = [0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff];
    const MOV_R1: [u8; 8] = [0xbf, 0x61, 0, 0, 0, 0, 0, 0];
    const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0];
    const LD_IMM64: [u8; 8] = [0x18, 0x11, 0, 0, 0, 0, 0, 0];

    fn text_of(obj: &[u8]) -> Vec<[u8; 8]> {
        let f = object::File::parse(obj).unwrap();
        let s = f.section_by_name("classifier").unwrap();
        s.data().unwrap().chunks(8).map(|c| c.try_into().unwrap()).collect()
    }

    #[test]
    fn a_resolved_call_becomes_a_kfunc_call_with_the_btf_id() {
        let o = elf(&[MOV_R1, CALL, CALL, EXIT], &[(1, 1), (2, 2)], &["bpf_dynptr_from_skb", "bpf_loop_kfunc"]);
        assert_eq!(kfunc_names(&o).unwrap(), ["bpf_dynptr_from_skb", "bpf_loop_kfunc"]);
        let p = patch(&o, &mut |n| (n == "bpf_dynptr_from_skb").then_some(0x1234_5678)).unwrap();
        let t = text_of(&p.object);
        assert_eq!(t[0], MOV_R1, "other instructions untouched");
        assert_eq!(t[1], [0x85, 0x20, 0, 0, 0x78, 0x56, 0x34, 0x12], "src_reg 2, off 0, imm = id");
        assert_eq!(t[2], [0xb7, 0x00, 0, 0, 0xa1, 0xff, 0xff, 0xff], "unknown kfunc -> r0 = -95");
        assert_eq!(t[3], EXIT);
        assert_eq!(p.missing(), ["bpf_loop_kfunc"]);
        assert_eq!(
            p.calls[0],
            KfuncCall {
                name: "bpf_dynptr_from_skb".into(),
                section: "classifier".into(),
                insn: 1,
                btf_id: Some(0x1234_5678)
            }
        );
        assert_eq!(p.object.len(), o.len(), "same size: only instructions change");
        let changed = o.iter().zip(&p.object).filter(|(a, b)| a != b).count();
        assert!(changed <= 2 * 8, "only the two call instructions differ ({changed} bytes)");
    }

    #[test]
    fn patching_twice_keeps_the_first_result() {
        let o = elf(&[CALL, CALL, EXIT], &[(0, 1), (1, 2)], &["found", "absent"]);
        let once = patch(&o, &mut |n| (n == "found").then_some(42)).unwrap();
        let twice = patch(&once.object, &mut |_| panic!("nothing left to resolve")).unwrap();
        assert_eq!(twice.object, once.object);
        assert_eq!(twice.calls, once.calls);
        assert_eq!(twice.missing(), ["absent"]);
    }

    #[test]
    fn calls_to_defined_functions_are_left_to_aya() {
        // symbol 2 is `helper`, defined in the section: a BPF-to-BPF call
        let o = elf(&[CALL, EXIT], &[(0, 2)], &["bpf_dynptr_from_skb"]);
        assert!(kfunc_names(&o).unwrap().is_empty());
        let p = patch(&o, &mut |_| panic!("nothing to resolve")).unwrap();
        assert_eq!(p.object, o);
        assert!(p.calls.is_empty());
    }

    #[test]
    fn an_undefined_symbol_that_is_not_called_is_refused_by_name() {
        let o = elf(&[LD_IMM64, [0; 8], EXIT], &[(0, 1)], &["bpf_prog_active"]);
        let e = patch(&o, &mut |_| Some(1)).unwrap_err();
        assert_eq!(e, KfuncError::NotACall { name: "bpf_prog_active".into(), section: "classifier".into(), insn: 0 });
        assert!(e.to_string().contains("`bpf_prog_active`"), "{e}");
    }

    #[test]
    fn not_an_elf_is_a_clear_error() {
        let e = patch(b"not an object", &mut |_| None).unwrap_err();
        assert!(e.to_string().starts_with("the eBPF object is not a readable ELF file"), "{e}");
    }
}

impl super::Dataplane {
    /// Loads tc program `name`, which calls the kernel functions `needs` (Linux `since`),
    /// and returns its fd (BPF_PROG_TEST_RUN in the packet tier; the agent attaches none
    /// of them yet). A kernel without one of them: [`super::EbpfError::KfuncMissing`].
    pub fn kfunc_tc_program_fd(
        &mut self,
        name: &'static str,
        needs: &[&str],
        since: &'static str,
    ) -> Result<std::os::fd::RawFd, super::EbpfError> {
        self.require_kfuncs(name, needs, since)?;
        self.tc_program_fd(name)
    }

    /// Refuses `program` when the kernel lacks one of `needs` (its calls were replaced by
    /// `r0 = -EOPNOTSUPP` and it must not run).
    pub fn require_kfuncs(
        &self,
        program: &'static str,
        needs: &[&str],
        since: &'static str,
    ) -> Result<(), super::EbpfError> {
        let missing: Vec<&str> =
            needs.iter().copied().filter(|n| self.kfuncs.iter().any(|c| c.name == *n && c.btf_id.is_none())).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(super::EbpfError::KfuncMissing { program, missing: missing.join(", "), since })
        }
    }
}

impl super::Dataplane {
    /// The verifier's processed-instruction count of loaded program `name`
    /// (`verified_insns` of BPF_OBJ_GET_INFO_BY_FD, Linux 5.16).
    pub fn verified_insns(&self, name: &str) -> Option<u32> {
        self.ebpf.program(name)?.info().ok()?.verified_instruction_count()
    }
}
