/*
 * CRIU compel's <compel/cpu.h> on this compel: what the CPU this runs on offers. The queries
 * answer from one copy of compel_cpuid() made on first use (compel_cpu_clear_feature()
 * changes that copy).
 */
#ifndef COMPEL_CPU_H
#define COMPEL_CPU_H

#include <stdbool.h>
#include <stdint.h>
#include <compel/asm/cpu.h>

/* Fills *info from CPUID; 0, or -EINVAL. */
int compel_cpuid(compel_cpuinfo_t *info);
/* X86_FEATURE_* (word * 32 + bit) is present. */
bool compel_cpu_has_feature(unsigned int feature);
/* The xsave component XFEATURE_* is enabled. */
bool compel_fpu_has_feature(unsigned int feature);
/* Size and standard-layout offset of an xsave component (0 if unknown). */
uint32_t compel_fpu_feature_size(unsigned int feature);
uint32_t compel_fpu_feature_offset(unsigned int feature);
/* From now on compel_cpu_has_feature(feature) is false. */
void compel_cpu_clear_feature(unsigned int feature);
/* A copy of what the queries answer from. */
void compel_cpu_copy_cpuinfo(compel_cpuinfo_t *c);

#endif /* COMPEL_CPU_H */
