// FMA peak of this CPU: 12 independent vfmadd231ps chains per thread (AVX-512 zmm, then AVX2
// ymm; AVX-512 only where the CPU has it), 1 and 2 threads; then AVX2's int8 multiply-adds
// (vpmaddwd: 16 i16 MACs, vpmaddubsw: 32 u8×s8 MACs per instruction), one thread. The roofline BENCHMARKS.md compares embedding GFLOP/s with.
// gcc -O2 -pthread scripts/bench/fma_peak.c -o target/fma_peak && target/fma_peak
#include <stdio.h>
#include <time.h>
#include <pthread.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 100000000L
void* z(void*a){ for(long n=0;n<N;n++){ __asm__ volatile(
 "vfmadd231ps %%zmm0,%%zmm1,%%zmm2\n vfmadd231ps %%zmm0,%%zmm1,%%zmm3\n vfmadd231ps %%zmm0,%%zmm1,%%zmm4\n vfmadd231ps %%zmm0,%%zmm1,%%zmm5\n"
 "vfmadd231ps %%zmm0,%%zmm1,%%zmm6\n vfmadd231ps %%zmm0,%%zmm1,%%zmm7\n vfmadd231ps %%zmm0,%%zmm1,%%zmm8\n vfmadd231ps %%zmm0,%%zmm1,%%zmm9\n"
 "vfmadd231ps %%zmm0,%%zmm1,%%zmm10\n vfmadd231ps %%zmm0,%%zmm1,%%zmm11\n vfmadd231ps %%zmm0,%%zmm1,%%zmm12\n vfmadd231ps %%zmm0,%%zmm1,%%zmm13\n":::"xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13");} return 0;}
void* y(void*a){ for(long n=0;n<N;n++){ __asm__ volatile(
 "vfmadd231ps %%ymm0,%%ymm1,%%ymm2\n vfmadd231ps %%ymm0,%%ymm1,%%ymm3\n vfmadd231ps %%ymm0,%%ymm1,%%ymm4\n vfmadd231ps %%ymm0,%%ymm1,%%ymm5\n"
 "vfmadd231ps %%ymm0,%%ymm1,%%ymm6\n vfmadd231ps %%ymm0,%%ymm1,%%ymm7\n vfmadd231ps %%ymm0,%%ymm1,%%ymm8\n vfmadd231ps %%ymm0,%%ymm1,%%ymm9\n"
 "vfmadd231ps %%ymm0,%%ymm1,%%ymm10\n vfmadd231ps %%ymm0,%%ymm1,%%ymm11\n vfmadd231ps %%ymm0,%%ymm1,%%ymm12\n vfmadd231ps %%ymm0,%%ymm1,%%ymm13\n":::"xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9","xmm10","xmm11","xmm12","xmm13");} return 0;}
#define I8(op) void* op##_(void*a){ for(long n=0;n<N;n++){ __asm__ volatile( \
 #op " %%ymm0,%%ymm1,%%ymm2\n" #op " %%ymm0,%%ymm1,%%ymm3\n" #op " %%ymm0,%%ymm1,%%ymm4\n" #op " %%ymm0,%%ymm1,%%ymm5\n" \
 #op " %%ymm0,%%ymm1,%%ymm6\n" #op " %%ymm0,%%ymm1,%%ymm7\n" #op " %%ymm0,%%ymm1,%%ymm8\n" #op " %%ymm0,%%ymm1,%%ymm9\n" \
 :::"xmm2","xmm3","xmm4","xmm5","xmm6","xmm7","xmm8","xmm9");} return 0;}
I8(vpmaddwd)
I8(vpmaddubsw)
static void int8_rates(void){ struct {const char*name; void*(*f)(void*); int macs;} k[2]={{"vpmaddwd",vpmaddwd_,16},{"vpmaddubsw",vpmaddubsw_,32}};
 for(int i=0;i<2;i++){ double t0=now(); k[i].f(0); double dt=now()-t0;
  printf("%s threads=1 instr/ns=%.2f GMAC/s=%.1f (vpmaddubsw's i16 sums still need a widening vpmaddwd)\n", k[i].name, N*8/dt/1e9, N*8*(double)k[i].macs/dt/1e9);} }
int main(){ for(int w=__builtin_cpu_supports("avx512f")?0:1;w<2;w++){ void*(*f)(void*)= w?y:z; int lanes=w?8:16;
 for(int th=1;th<=2;th++){ pthread_t t[2]; double t0=now(); for(int i=0;i<th;i++) pthread_create(&t[i],0,f,0); for(int i=0;i<th;i++) pthread_join(t[i],0);
 double dt=now()-t0; printf("%s threads=%d GFLOP/s=%.1f\n", w?"avx2":"avx512", th, th*(double)N*12*lanes*2/dt/1e9);} }  int8_rates(); }
