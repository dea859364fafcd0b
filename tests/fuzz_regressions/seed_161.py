"""Fuzz reproducer: seed 161 (32-bit), minimized from 16 case(s) to 1.

Found by pvtranslate.fuzz: diverge (console, blame: translation).
exit status native 1, pv 4; pv error: the guest executed hlt with interrupts disabled at rip 0x20d49b: nothing can wake it (QEMU would hang here); fullvirt agrees with native
--- native
+++ pv
@@ -1,3 +1 @@
 guestgen 32-bit seed 0xa1, 1 cases
-c00 f=ad2 sp=0 h=c049f94f k=e4798f57 x=1
-PASS

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python seed_161.py``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

    # fuzz program: seed 161, 32-bit, 1 case(s)
    c00 hlt [IF=1, the timer IRQ0 ends it] plain: hlt
      @SITE: hlt
      @POST:
          !out 0x80, al
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = 161
BITS = 32
VERDICT = 'diverge'
ASPECT = 'console'
BLAME = 'translation'
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {'bits': 32,
 'cases': [{'context': 'plain',
            'draw_seed': 1150042466,
            'entry': 'hlt',
            'pieces': [{'after': ['!out 0x80, al'],
                        'before': [],
                        'functions': [],
                        'kind': 'filler',
                        'tags': ['filler-site']}],
            'variant': 0}],
 'seed': 161}
GUEST_ELF = zlib.decompress(base64.b64decode(
    "eNrtnHtUVNUex/cwA4yIzQhopFkHwzQfyDwgUExUQMsu4SOfVxBheEgizgwq2sNAy5GBSleWaZT5uJrpHSvxQY3jnZaPMkUt"
    "pWv5ykVznGuKmW/h/vY5++iu7m31x73duv0+a539/X3O2ed3HrN5rCX1TOqjaSqViigEEDWhJhA9MUO6rsj7zbBHQ7oRLQmW"
    "jsNhQpLZppe3ILZfOi6QWweSg4m0BfLHY5VJsHmItCnna350fgSMdNOwDUEQBEEQBEEQBEEQBEEQBEEQBEEQBEGQH6L8m3oY"
    "bGMsxdK/+/N84HlDIDpVO2IWyBkTHNSSLXRGdUO1p/pEta+6XppRJ5jptI46wVPXLVkgDrVOOFEXK1Wuto0CbG+6hMYoV7fG"
    "5S4NZACkClIF2QLZ0rh8SzL01ZGGLROlrN9qVxGyRQtiOKiLdScNEIgvXsVuaQu9ua2hKj3xpcI+V3Nj1JY7bj41dKvXmuvd"
    "Nj+qQ3hdl0cmdflw5tjNwe6sYasitwtbSp6+nuF6RqN6/2DNmIuNczKGDR/x+KjRy6pyo32+vyiNfVOhqhPgzivVvga4iE9H"
    "+8M9+pqpZYC54+m9vA3qIo0X/c3DR9SRFDghfH5KuHagIzwpxK599hpRE2IN9MFIxo/zwtVGuaVZd+yS/tChYqd22xU4eOO7"
    "4sxxY8d4R4xyeB370h1NO04GOBoO+SpO6HS1c+bAjfiWtbS0zLtU+nXmeGmWm76TimaVPczR9PDt2aXqdL/oaHI0ZI73vzvP"
    "U/bZ5YYMVy9fFpw8xr9r1IKguR671pcBmua/kOnNcLelT3GaHvatgtFbR6TPq05Lo3WGK8d3Hz24NYA+9wQ6wxXi09N0NuRV"
    "XNHbg9lScHp49ThP8HrC6ePV56zntX5ywOte6Yq76Isicl2pnuexB0ufR8sJ9wP0PpPguq7+9G07dztSojXOehi1zgYYQ50e"
    "GPXOEzBGOH0wRlbZozVVTycYDvrJz99rnZ5eLijPoa5M0+Q5BgVUpmkhNJVpoRBBlWl6CG1lWgRESNX0yLpk+nJMdUNo9J13"
    "0J4y3N2J3t+y5paWyojoygD5dcWAugV6oIIdGKjx9ac7o+nOYqjGVQ7U+npC4SduQneOhVrqX9kR1l4Ynayh+wfQ/UOk19JL"
    "WqL30h1Emlh09O5nvSRDIG7pxHiDZyv985rKiOr7RlbeKPLcq6ofUHE1ePq3bvqghj26zRHpyt4ga1OGuxW9wvGb9HOmy8pX"
    "CqXvTqgy3G3ooY9uHxoHpdfgcZMhAtlK/4rHNwZ2u0mJog9LOoQw7SNpLBx9lZ7eAwb5MUx1nhqBJB6ztqojb9JieqCbPthW"
    "ag80+egTeOftsYfqattLN5v2sP+8l329ttije9IvWVgGmmhpFWikVaCVVkGotAr00iqIcDRWPRn9aNXI6ATfJbh38U0YJpPJ"
    "xP8+jCr/BhgD/GtgVPvfglHjXwZjoH8xjEH+F2EM9i+YrPU/B1Ur/5zJIWIZLMLJrUUrjVCxiEYbMZfGHSL9AoGJOnGkXOjF"
    "obRoK6bIHib2lYtw0SgXEeIDtGgndpa9vXiXXNwp6uUiUgyWi7vE5map6CB+LxcdxX/Ixd3i17ToJH5J4x7xc3n3veJeuYgS"
    "vXLRWdwmF/eJG+UiWlwjF13EN+TifnGxXHQVq+SimzhXLh4QZ8tFd9EqFz3EQrnoKU6Ui17iaLmIEdPloreYKhcGMUkujKJJ"
    "Lkxid7kwi1FyESdGykW8qJOLB8UguUgQb8ofXqJ4US76iH656Cuekosk8Qu56CfWy8VD4i656C+6ocgYAT+DBOmbe4t6/Jj9"
    "/E+AX7ScPo2Vvqn41lyH1TQcBi/+BoEgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgyH+LlhYYlu6X"
    "cxHL6yy/+zcO8/IJMQmO233yyZwfuI4Qo1B+2/sHawlx6rnrJt++XrjSF5//V31u5frw/H9IXD/+v178pyn4zV7/FUL/A/0f"
    "uIH3FhVJ4H37jxxBkN8vTRr4eVStJ5dZ3mSpDpSzFUsdy3YsO7KMYtmFZQ+WRpaJLJNZDmaZznI0y4ks81mWsCxjWc7SwXIh"
    "y6UsV7Jcz7KW5XaWu1nuZ3mY5dkgOY8z97FsYnmNpZrNC2XZjuU9LLuyjGWZyHIgy6EsR7KcoMynvw98qyd5zKeynMnyWZYL"
    "WC5iuYzlKpYbWG5m6WG5h+VBlkdZnmaJIAiCIP8LYg1Gkzku/sGExOxJObmWvF/7+kJePyLYSmAogK0ItpmwWelO2KKIYIEo"
    "pMcfT08dk5E6aGRqSgjJGDBiRAjJL7XY7PmWYsFk7DWp0C7YLJZcIXZmtqGnYBBysm0WWwh+wAiCIMhvkrlmZ48+ZxsvrHhl"
    "lnbHP96rOzX7yW2hpZt0sz5/41L4krLaj1Wn1Z/t2TXwubQbvjOrvlmfNzNu+9iz706fP3By15LQ+qe6981O2Vm5tiBEkzL/"
    "3KwlyxNsiy8e1l786uOUL78sDy8f3++54ReumLtYquLOtn7tyJXZVdWB7/TqW7tjwrpK/YL1h9o8aTg0KGHG5MyqvfsfOl0m"
    "9F1JmjrEZ09LSD2V33r89iVLXsvqvGHh/SNjwoKfDrzhulxU2y5ndmj9lE+OLB4/bVRe3+p1h+8L+WxYzel3NzUOyP/qmc25"
    "gtAjaZ/x3HHxm9KrYU/v+HTqJ1/n3WxetvHDNsdWD7nQfLVTQTf14WnXC84tXDmri28GrgAEQRDkj0jLz4BvB0EQBEEQBEEQ"
    "BEEQBEEQBEEQBEEQBEF+HxxfPWvW+h6DPhs6YfpOrSvp6MH+09uGl7/UFPS3dOfoHvs6LOqeuOu9XkXPrzjZOSOwriZqfo7l"
    "Yedbxr5HGoOFD15tPaw4wVTzzjd7IkaF54/JFNtf21euTz/QZ3Pkmsz5pnufKKg4oq0Vu77w0PFuZGNszkrroUOBH1t2Rq9e"
    "s3Ht4YkhXywp++hA8Libb54O+frx1++YuPHL402Dg85vsjbnvVjZ8ewh751Of7Lq4rW3L3/1kv+xpcfODdqdn/myJvX7w7YJ"
    "IZHLDWWZd3evWbvpwLjuO/bu/urtXYuvL3ph9XcN6ybumHty3ZLVCe2G/vX5T8/WvJa/cXDChyfbpNTMvrtizdoHZ/dzHXl7"
    "47DIVe299bgCEARBEARBEARBEARBEARBEARBEARBEARBEARBEARBEARBkF8DffKLXWYUbcsacmrwrrpDOdkrur+v3ndu/l3L"
    "em/pdPHltNz+OSsXTnr+6IorZ4JTX9HP+rbd8LWdjt4VeeaFXknTplU81RbfIIIgCIIgCIIgCIIgCIIgCIIgCIIgCIL8/6GC"
    "TSB6Eg4ZRtREC2kCD1PJrgNPVelJNDveHrIQPIr5PZALwO9n3hXSBd6NeSxkA3hb5kmQIueDIK+BhzH/E2RogJ50Zj4OMgZc"
    "y9wCGQ/+GPMpkPPAQ5mXQb7EnV8O+R54b+ZOyFPgK5m/DPmcWk/WMa+BNGj0pJD5WsjXNLfvdwPkOvA05rWQTeBBzN2Qlznf"
    "CXmT832Q6sDbfhiyFefHIHWcN0K24/xbyI6cX4KMAtcwb4bswh0Pgs+xB3gwcx24kfNI8ETOo8CTOe8OPphzE3g6eCvl8wQf"
    "zXkq+ERufjp4Pnd8NHgJ5xPByzgvBC/nzreCO7jjs8EXcj4XfCnnVeArOV8Mvp7zN8BrOV8Dvp3zjeC7uetvA9/PuRf8MDd/"
    "L/hxzj8H93F+DLyJ82/Ar3F+HlwddNuvgodyHhAAnz/nrcHv4TwCvCvnncBjOb8fPJHz3uADOU8AH8r5APCRnD8CPoHzEeB5"
    "nP8ZfCrnFvCZnBeDP8v5DPAFnM8BX8S5A3wZ5wvBV3G+FHwD5yvBN3O+HtzDeS34Hs63gx/kfDf4Uc4PgJ/m/O/gZ8H1zE+C"
    "3wQ3MT9D33ewXvo+Sf0KeH9wFXOSZbNnW+0kLWtKdmExREmpPQci74lSW4GsBZaZclFcOkUubIX5xZZcVtOwFhbbs+isnGyb"
    "JWuSJV9qJYmlmE60WmwWepHiqbQsnWKR98lFTnaJvdRKq7zC4kLpsrmF+RYbPSGnwJJTZJMunFNEZ2SXPkH3F9qsWbEsDSyN"
    "LE0szSzjWMazfJBlAstEpc+thkpHg9LSoPQ0KE0NSleD0tag9DUojQ1KZ6PS2XjrXpXORqWzUelsVDoblc5GpbNR6WxUOpuU"
    "zials0lpaFIampSGJqWhSWloUhqalIZmpaFZaWhWbtV868Uqnc1KZ7PS2ax0NisN45SGcUrDOKVhnNIw7tZHpTSMUxrGKQ3j"
    "lFuNUzrHK53jlc7xSud4qbN1Gp1RarNYTUZWwKqDtUZXZ3623ZIFaz8fFiaJeWLqjNxsezaJKZ5qt8SUTC8gMXbLTDuJkffa"
    "yqbYsydB2q1yFrDql/z+oiTd1FSSYdOzjaGUIbDR7+UByl6BkAiun4ZlBOsXxH4/EmCeEPzTfh3469Jm9Bcez0/nCbeuyThP"
    "fw7K/en5Wja3261eMiXfwxz1T5839kfzpl8hpM+/eC//BIx02gA="))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {"0x100025": "lgdt", "0x100038": "mov.to.ds", "0x10003a": "mov.to.es", "0x10003c": "mov.to.fs", "0x10003e": "mov.to.gs", "0x100040": "mov.to.ss", "0x10004c": "lidt", "0x10004f": "mov.from.cr0", "0x100059": "mov.from.cr4", "0x100065": "out8.imm8", "0x100069": "out8.imm8", "0x10006d": "out8.imm8", "0x100071": "out8.imm8", "0x100075": "out8.imm8", "0x100079": "out8.imm8", "0x10007d": "out8.imm8", "0x100081": "out8.imm8", "0x100085": "out8.imm8", "0x100089": "out8.imm8", "0x100090": "ltr", "0x100098": "lldt", "0x1000a7": "wrmsr", "0x1000c9": "out8.imm8", "0x1000ee": "sti", "0x1000f8": "hlt", "0x1000f9": "out8.imm8", "0x100102": "pushfd", "0x100129": "out8.imm8", "0x100141": "out8.imm8", "0x100183": "rep.outsb", "0x100236": "mov.from.ds", "0x100243": "mov.to.ds", "0x100245": "mov.from.es", "0x100252": "mov.to.es", "0x100254": "mov.from.fs", "0x100261": "mov.to.fs", "0x100263": "mov.from.gs", "0x100270": "mov.to.gs", "0x100272": "mov.from.ss", "0x10027f": "mov.to.ss", "0x100283": "popfd", "0x1002af": "out8.imm8", "0x1002b3": "mov.from.cs", "0x1002b9": "mov.from.ss", "0x1002bf": "mov.from.ds", "0x1002c5": "mov.from.es", "0x1002cb": "mov.from.fs", "0x1002d1": "mov.from.gs", "0x1002e2": "mov.from.ds", "0x1002ef": "mov.to.ds", "0x1002f1": "mov.from.es", "0x1002fe": "mov.to.es", "0x1004ba": "mov.from.cs", "0x1004bf": "mov.from.ss", "0x1004c5": "mov.from.ds", "0x1004cb": "mov.from.es", "0x1004d1": "mov.from.fs", "0x1004d7": "mov.from.gs", "0x1006f1": "out8.imm8", "0x1006fc": "iretd", "0x100704": "pushfd", "0x100709": "mov.from.cs", "0x10070e": "mov.from.ss", "0x100714": "mov.from.ds", "0x10071a": "mov.from.es", "0x100720": "mov.from.fs", "0x100726": "mov.from.gs"}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
