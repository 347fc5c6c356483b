#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
float run(float x, float y){
  __m512 acc[8]; for(int i=0;i<8;i++) acc[i]=_mm512_setzero_ps();
  __m512 a=_mm512_set1_ps(x), b=_mm512_set1_ps(y);
  for(long n=0;n<20000000;n++) for(int i=0;i<8;i++) acc[i]=_mm512_fmadd_ps(a,b,acc[i]);
  float s=0; for(int i=0;i<8;i++) s+=_mm512_reduce_add_ps(acc[i]); return s;}
int main(){
  double t=now(); float s=run(0.5f,1e-3f); printf("normal   %.3fs %g\n",now()-t,s);
  t=now(); s=run(0.5f,1e-39f); printf("denormal %.3fs %g\n",now()-t,s);
  _mm_setcsr(_mm_getcsr()|0x8040);
  t=now(); s=run(0.5f,1e-39f); printf("denormal FTZ/DAZ %.3fs %g\n",now()-t,s);
}
