//! `cuda-report [--arch N] [--only SUBSTRING] [--sass DIR] [--threads N]`: compile every
//! CUDA kernel variant with NVRTC (no GPU needed), disassemble it with cuobjdump and print
//! one line per kernel: registers, shared and local memory, global loads by width, integer
//! dot products, tensor-core instructions, cp.async. Run through `scripts/cuda-report`,
//! which finds the PyPI wheels' libraries; the columns are explained in
//! tests/src/cuda_disasm.rs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kiln_backend_cuda::compile::{Nvrtc, Target};
use kiln_tests::cuda_disasm::{analyse_all, find_cuobjdump, table};

const USAGE: &str = "usage: cuda-report [--arch N] [--only SUBSTRING] [--sass DIR] [--threads N]
  --arch N          GPU architecture to compile for, 90a for sm_90a [default: 90]
  --only SUBSTRING  report only the variants whose name contains SUBSTRING
  --sass DIR        also write each variant's resource usage and SASS to DIR/<variant>.sass
  --threads N       compile and disassemble on N threads [default: available cores]";

struct Args {
    arch: Target,
    only: Option<String>,
    sass: Option<PathBuf>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        arch: Target::from(90),
        only: None,
        sass: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--arch" => {
                let v = value()?;
                let (n, specific) = v
                    .strip_suffix('a')
                    .map_or((v.as_str(), false), |n| (n, true));
                let arch = n.parse().map_err(|e| format!("--arch: {e}"))?;
                args.arch = Target { arch, specific };
            }
            "--only" => args.only = Some(value()?),
            "--sass" => args.sass = Some(PathBuf::from(value()?)),
            "--threads" => {
                args.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cuda-report: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let path = std::env::var_os("KILN_NVRTC_PATH").map(PathBuf::from);
    let nvrtc = match Nvrtc::load(path.as_deref()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cuda-report: no NVRTC: {e} (pip install nvidia-cuda-nvrtc==13.0.88)");
            return ExitCode::FAILURE;
        }
    };
    let cuobjdump = match find_cuobjdump(nvrtc.path()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cuda-report: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = &args.sass
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("cuda-report: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    let only = args.only.clone();
    let filter = move |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    match analyse_all(
        &nvrtc,
        &cuobjdump,
        args.arch,
        args.threads,
        args.sass.as_deref(),
        &filter,
    ) {
        Ok(facts) => {
            print!("{}", table(&facts));
            println!(
                "{} kernels, {}, NVRTC {:?}, {} in {:.1} s on {} threads",
                facts.len(),
                args.arch,
                nvrtc.version(),
                cuobjdump.display(),
                start.elapsed().as_secs_f64(),
                args.threads
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cuda-report: {e}");
            ExitCode::FAILURE
        }
    }
}
