# Sourced by the benchmark scripts: which CPU their figures come from.

# "MODEL NAME, AMX|AVX-512|AVX2" (the widest vector extension /proc/cpuinfo reports).
cpu_label() {
    local model flags isa=?
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    flags=" $(sed -n 's/^flags[[:space:]]*: //p' /proc/cpuinfo | head -n 1) "
    case $flags in
        *" amx_bf16 "*) isa=AMX ;;
        *" avx512f "*) isa=AVX-512 ;;
        *" avx2 "*) isa=AVX2 ;;
    esac
    echo "${model:-?}, $isa"
}

# Whether LibTorch has a bfloat16 path on this CPU (AVX-512 BW, VL and DQ): what
# cd-infer and cd-train-teacher check before they accept --amp.
cpu_has_bf16() {
    grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo
}
