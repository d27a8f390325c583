/*
 * CRIU compel's <compel/asm/cpu.h> on this compel (x86_64): compel_cpuinfo_t and the feature
 * numbers compel_cpu_has_feature() takes, word * 32 + bit, the words in the order of the
 * kernel's cpuid_leafs (an ABI of CRIU's cpuinfo image). The common features are named here;
 * any other is (word * 32 + bit).
 */
#ifndef COMPEL_ASM_CPU_H
#define COMPEL_ASM_CPU_H

#include <stdint.h>
#include <compel/asm/fpu.h>

enum cpuid_leafs {
	CPUID_1_EDX = 0,
	CPUID_8000_0001_EDX = 1,
	CPUID_8086_0001_EDX = 2,
	CPUID_LNX_1 = 3,
	CPUID_1_ECX = 4,
	CPUID_C000_0001_EDX = 5,
	CPUID_8000_0001_ECX = 6,
	CPUID_LNX_2 = 7,
	CPUID_LNX_3 = 8,
	CPUID_7_0_EBX = 9,
	CPUID_D_1_EAX = 10,
	CPUID_7_0_ECX = 11,
	CPUID_F_1_EDX = 12,
	CPUID_8000_0008_EBX = 13,
	CPUID_6_EAX = 14,
	CPUID_8000_000A_EDX = 15,
	CPUID_F_0_EDX = 16,
	CPUID_8000_0007_EBX = 17,
	CPUID_7_0_EDX = 18,
};

#define NCAPINTS_V1 12
#define NCAPINTS_V2 19
#define NCAPINTS NCAPINTS_V2
#define NCAPINTS_BITS (NCAPINTS * 32)

#define X86_FEATURE_FPU (CPUID_1_EDX * 32 + 0)
#define X86_FEATURE_TSC (CPUID_1_EDX * 32 + 4)
#define X86_FEATURE_CX8 (CPUID_1_EDX * 32 + 8)
#define X86_FEATURE_CMOV (CPUID_1_EDX * 32 + 15)
#define X86_FEATURE_CLFLUSH (CPUID_1_EDX * 32 + 19)
#define X86_FEATURE_MMX (CPUID_1_EDX * 32 + 23)
#define X86_FEATURE_FXSR (CPUID_1_EDX * 32 + 24)
#define X86_FEATURE_XMM (CPUID_1_EDX * 32 + 25)
#define X86_FEATURE_XMM2 (CPUID_1_EDX * 32 + 26)
#define X86_FEATURE_SYSCALL (CPUID_8000_0001_EDX * 32 + 11)
#define X86_FEATURE_NX (CPUID_8000_0001_EDX * 32 + 20)
#define X86_FEATURE_GBPAGES (CPUID_8000_0001_EDX * 32 + 26)
#define X86_FEATURE_RDTSCP (CPUID_8000_0001_EDX * 32 + 27)
#define X86_FEATURE_LM (CPUID_8000_0001_EDX * 32 + 29)
#define X86_FEATURE_NOPL (CPUID_LNX_1 * 32 + 20)
#define X86_FEATURE_CPUID (CPUID_LNX_1 * 32 + 25)
#define X86_FEATURE_XMM3 (CPUID_1_ECX * 32 + 0)
#define X86_FEATURE_PCLMULQDQ (CPUID_1_ECX * 32 + 1)
#define X86_FEATURE_SSSE3 (CPUID_1_ECX * 32 + 9)
#define X86_FEATURE_FMA (CPUID_1_ECX * 32 + 12)
#define X86_FEATURE_CX16 (CPUID_1_ECX * 32 + 13)
#define X86_FEATURE_XMM4_1 (CPUID_1_ECX * 32 + 19)
#define X86_FEATURE_XMM4_2 (CPUID_1_ECX * 32 + 20)
#define X86_FEATURE_MOVBE (CPUID_1_ECX * 32 + 22)
#define X86_FEATURE_POPCNT (CPUID_1_ECX * 32 + 23)
#define X86_FEATURE_AES (CPUID_1_ECX * 32 + 25)
#define X86_FEATURE_XSAVE (CPUID_1_ECX * 32 + 26)
#define X86_FEATURE_OSXSAVE (CPUID_1_ECX * 32 + 27)
#define X86_FEATURE_AVX (CPUID_1_ECX * 32 + 28)
#define X86_FEATURE_F16C (CPUID_1_ECX * 32 + 29)
#define X86_FEATURE_RDRAND (CPUID_1_ECX * 32 + 30)
#define X86_FEATURE_LAHF_LM (CPUID_8000_0001_ECX * 32 + 0)
#define X86_FEATURE_ABM (CPUID_8000_0001_ECX * 32 + 5)
#define X86_FEATURE_FSGSBASE (CPUID_7_0_EBX * 32 + 0)
#define X86_FEATURE_BMI1 (CPUID_7_0_EBX * 32 + 3)
#define X86_FEATURE_AVX2 (CPUID_7_0_EBX * 32 + 5)
#define X86_FEATURE_BMI2 (CPUID_7_0_EBX * 32 + 8)
#define X86_FEATURE_ERMS (CPUID_7_0_EBX * 32 + 9)
#define X86_FEATURE_AVX512F (CPUID_7_0_EBX * 32 + 16)
#define X86_FEATURE_AVX512DQ (CPUID_7_0_EBX * 32 + 17)
#define X86_FEATURE_RDSEED (CPUID_7_0_EBX * 32 + 18)
#define X86_FEATURE_ADX (CPUID_7_0_EBX * 32 + 19)
#define X86_FEATURE_AVX512CD (CPUID_7_0_EBX * 32 + 28)
#define X86_FEATURE_SHA_NI (CPUID_7_0_EBX * 32 + 29)
#define X86_FEATURE_AVX512BW (CPUID_7_0_EBX * 32 + 30)
#define X86_FEATURE_AVX512VL (CPUID_7_0_EBX * 32 + 31)
#define X86_FEATURE_XSAVEOPT (CPUID_D_1_EAX * 32 + 0)
#define X86_FEATURE_XSAVEC (CPUID_D_1_EAX * 32 + 1)
#define X86_FEATURE_XGETBV1 (CPUID_D_1_EAX * 32 + 2)
#define X86_FEATURE_XSAVES (CPUID_D_1_EAX * 32 + 3)
#define X86_FEATURE_PKU (CPUID_7_0_ECX * 32 + 3)
#define X86_FEATURE_OSPKE (CPUID_7_0_ECX * 32 + 4)
#define X86_FEATURE_VAES (CPUID_7_0_ECX * 32 + 9)
#define X86_FEATURE_VPCLMULQDQ (CPUID_7_0_ECX * 32 + 10)
#define X86_FEATURE_AMX_BF16 (CPUID_7_0_EDX * 32 + 22)
#define X86_FEATURE_AMX_TILE (CPUID_7_0_EDX * 32 + 24)
#define X86_FEATURE_AMX_INT8 (CPUID_7_0_EDX * 32 + 25)

enum {
	X86_VENDOR_INTEL = 0,
	X86_VENDOR_AMD = 1,
	X86_VENDOR_MAX
};

struct cpuinfo_x86 {
	/* the CPU */
	uint8_t x86_family;
	uint8_t x86_vendor;
	uint8_t x86_model;
	uint8_t x86_mask;
	uint32_t x86_capability[NCAPINTS];
	uint32_t x86_power;
	uint32_t extended_cpuid_level;
	int cpuid_level;
	char x86_vendor_id[16];
	char x86_model_id[64];

	/* its xsave area: enabled components, sizes, standard and compacted offsets */
	uint64_t xfeatures_mask;
	uint32_t xsave_size_max;
	uint32_t xsave_size;
	uint32_t xstate_offsets[XFEATURE_MAX];
	uint32_t xstate_sizes[XFEATURE_MAX];
	uint32_t xsaves_size;
	uint32_t xstate_comp_offsets[XFEATURE_MAX];
	uint32_t xstate_comp_sizes[XFEATURE_MAX];
};

typedef struct cpuinfo_x86 compel_cpuinfo_t;

#endif /* COMPEL_ASM_CPU_H */
