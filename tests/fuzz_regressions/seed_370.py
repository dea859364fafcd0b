"""Fuzz reproducer: seed 370 (32-bit), minimized from 12 case(s) to 1.

Found by pvtranslate.fuzz: diverge (console, blame: native-vmm).
exit status native 1, pv 1; pv error: None; fullvirt agrees with pv
--- native
+++ pv
@@ -1,3 +1,3 @@
 guestgen 32-bit seed 0x172, 1 cases
-c00 !0d e=fff8 ip=100108 f=2 sp=-4 h=f4ed35ba k=e6f688ee
+c00 !0d e=fff8 ip=100108 f=13 sp=-4 h=f4ed35ba k=e6f688ee
 PASS

The guest ELF is embedded below (zlib, base64), so this file needs only pvtranslate and the VMM;
PROGRAM is the fuzz program that generated it (pvtranslate.fuzzgen.FuzzProgram.from_json(PROGRAM)
.build() rebuilds it while the generator is unchanged). Run ``python seed_370.py``: it exits with status 1
while the translation still differs from the original, 0 once it is fixed.

    # fuzz program: seed 370, 32-bit, 1 case(s)
    c00 pop.ds [beyond the GDT limit 0xfff8] plain, expect #13: pop ds
          cmp word ptr [0x207068], 0xffff
          !out 0x80, al
      @SITE: pop ds
      @POST:
"""
from __future__ import annotations

import base64
import sys
import tempfile
import zlib
from pathlib import Path

SEED = 370
BITS = 32
VERDICT = 'diverge'
ASPECT = 'console'
BLAME = 'native-vmm'
XFAIL_REASON = None   # set when kept as a known bug: the file and the fix it needs
PROGRAM = {'bits': 32,
 'cases': [{'context': 'plain',
            'draw_seed': 1768033896,
            'entry': 'pop.ds',
            'pieces': [{'after': [],
                        'before': ['cmp word ptr [0x207068], 0xffff'],
                        'functions': [],
                        'kind': 'straight',
                        'tags': []},
                       {'after': [],
                        'before': ['!out 0x80, al'],
                        'functions': [],
                        'kind': 'filler-before',
                        'tags': ['site-before', 'filler-site']}],
            'variant': 4}],
 'seed': 370}
GUEST_ELF = zlib.decompress(base64.b64decode(
    "eNrtnHtUVNUex/cMA4yIMQj5SuWgaGKCzAtQUTEeqRkhGKKWiDA8NEZiBh/XFAxNRgbTLHtp2MN7Ta1LZb6oEaO07irjqila"
    "FlnhHKdM8lKY6dzfPmcf3dW9rf64t1u332ets7+/z9l7fufMmc1jLamKlEmpKpWKKKiJD6EmEB0xQdZ3yudNcEZDhhAt8Zfm"
    "YZqQRHbo5MOPnZfmBXJ1Yow/kQ5ffj5GWQRHI5EO5fWaH70+FEZ6aNiBIAiCIAiCIAiCIAiCIAiCIAiCIAiCIMgPUf5NvTsc"
    "2Rar9O/+PK821gkkSHU9MQnkrBEmtWQ3XbG6ZXXj6tbV7tXN0ooGwUSX3RAkNDYMSRSIwydIaG2Ikar64DYBjk31Qlt4/ZC2"
    "p+o1kGpIFaQK0gvpbXtqdyL0DSItu2dJ2bzHriJktxZEfzgoxpUwTiBuk4rd0m56c3v6qHTEnUSXXbf/g8w9OQs+7thbvSQp"
    "sWFVl9olr91259YOV2hCVOe+7fqgjPT6Cg3Z0fPJ7Nr8iO8PaiI6vYQUVI0uKhWIt60yLH1yRuYdWVM3wKzb/YhyGXcOVO6u"
    "dLgCF3SnQ+WKpXeyFbSetP3DcyUjs4EkC6QmpDo5RHuzIyQhwK5d9h3xIaTM1w0jmTG9CbpnuaRV1x2U/syh6oB2bydMfn/B"
    "OnP6tOymzCxHk+NQmqN9/ydqR8sRd1VrUNDOykp4gO4NXq93xTfln86cIa1y0SdSdUVl7+5on3BtdblPmkd0tDtaZs7wvLSi"
    "cdHRb1vS66PcOfDibM/BrFV+yxvtWnc6aKrn65lN6a5g+i4+o9PuzTA2NRDp02rQ0uiaXp/nHkgn96jp+76LrqgPcOtoOlsK"
    "qjp1dn+2EZyNvDY6W3ltdbp5dTubeW2eo97YJF3xIH1QRK5rfFY02v2l5+9tdUXS+0yA69aPpU/b+ZYjOULjbIZR62yBMdDZ"
    "CKPO2QpjqNMNY69ae4Smdmm8/rCH/Py9Nujo5fwKHD41qZoCR5K6JlULoalJDYTwq0nVQWhrUkMhAmrn92pIpA/H2DCexqgV"
    "h+3JGa5+9P42XPF6a0IjatTy44oGdQl0oopN3Kxxj6UnI+hJK1TTa27WuodB4SEuQk9Og1rqX3NDjY+7O12soefH0fPjpccS"
    "JW3JMHqCSAvnftB3WRNJF4hLemGsvnEP/eOamtDVA6fUfD+3MUzVPK7qov/8cy76RvVvB+0KTVPO+pW1p7u60Ct8fJl+znRb"
    "ucuhdPeEKt3VjU69cW1qOpRN+kYXGS+QPfRveNzZcNpFShWdIOl4wnSkpDEw+yh9+U0wyG/D2ND4pEBGfFTWpYFsosV8Xxd9"
    "Y3uoRba76TtoWvG2PTBoZw/pZlMneM43sa9Prz1iGP0ShW2giZB2gUbaBVppFwRKu0An7YJQR1vtvRGTaqdExLu/gXsXN8Ew"
    "h8whnh0wqjwvwKj2bIHRx/M0jBrPBhh9Peth9POsgdHfs2qO1nM/VF08lXMCxEWwCed0FctoBIpzaXQT82lcJ9IvEFgYJE6R"
    "C514Ky2CxWTZu4uj5CJENMhFqBhJi+vFAbL3EHvLRU9RJxe9RH+56C1euSIVfcQOubhB/EIu+oqf0qKf+CGN/uL78ukw8R25"
    "CBeb5GKAuFcuBoovykWEuEUuBol1cjFYXC8XN4q1cjFEXC4XkeJiuRgqlsnFTWKxXAwTZ8lFlDhVLqLFNLkYLqbIhV5MkAuD"
    "aJQLozhULkxiuFyYxV5yESsGyUWc6CcX8eJl+cMbIf5DLkaKHrkYJZ6WiwTxhFyMFpvlYox4UC7Gii4o0jPhJ5DQIMAe9PrM"
    "yH6P/47/i7bTuzHSNxX3lkuwmzJgaMLfHxAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAEQRAE+e/h9cLw"
    "xHtyrmN5ieWFf+OwrpAQo+C41qeQVP7AgwgxCPdd89H+WkKcOu66ideuF6L0xff/q75v5frw/v+Q1P/4/3rxn6boN3v9Rwj9"
    "T/R/4HrevSoSz/u+HzmCIL9fvtLAz6PVOtLB8hJLla+c/iy7sQxh2ZtlGMuBLCNZxrCMYzmGZQrLSSzvYDmTpYWlleUClpUs"
    "V7Jcw/Ixlk+z3MZyB8vXWB5g+S7Loyw9fnKeYt7G8iuWnSxVbF0AyxCWfVkOYhnNMo5lIssJLDNYzlDW098HzulIPvMSlvNZ"
    "VrCsZrmW5eMsn2G5neUrLF0sD7JsZnmC5WmWCIIgCPK/IEZvMJrMsXHxI3Jn5+VbCn7t6wsFo4lgK4WhCI65cCyEo4yehCOc"
    "CBaIYjp/R1pKdnpK0pSU5ACSPi4zM4AUllts9kKLVTAaomYX2wWbxZIvxCzUxxmGCXohL9dmsQXgJ4wgCIL8FgnbdNT95oRH"
    "7r9l69nrx294IuIhV/sB9eJLgdszHlt36xZnQsa0vUeCl+Te/sDJ00f+uvnMCE9YUt17g+905kRWP/vGyC3rPtgoHjo6uKPr"
    "nbsqznaW9rvYc3zrrR3W+w+sGuKz8MzlTyvP7pr1QHL16X0nwjzuilUtOevGaiarrduSqnoGvxE19WSPaXfFpPd/9OQMY1zT"
    "8Tcv9jm3KCVyZcVbYX3Jt8cDzYlf6Dc3LTl8KO8p87QHSvss6XMhss2049LO1mObt344NTikzdzRLXhX1M6QyyX+f2rLHxU/"
    "53z03w6sHPT18JfPH10+69HouiUvXfqz+paNE9ruf+j1zn5nS17XXnw/Zelk37XPhH+zYvPn5bNwByAIgiB/RLw/Az4dBEEQ"
    "BEEQBEEQBEEQBEEQBEEQBEEQBPl9sC6+I1hXZ1YfTLvv1PYjhYsrza/3mHzOsL/rylbPoMupb28/fMo6uaV658jqNTUXJg5c"
    "aT/uSPv+u2/LniiY/NKD61bWJk4svm7l6Jf6pywrXey+t8Jxum+as73FqA68kH59qPn2+iV1S47Mfnp/eWh0Sdbs070HPZwc"
    "vL9o1/ilF8e+9eXibScyfctndrt9bYD7Htv+eeVVr3r3jjb2njly+JjYzTFLP2zddK7u8wv+PgH9reeG1N7i2zN4aPdulszH"
    "16+/8JBz2w2D5omjP/tyyvyuwysLjg2oXpzY/kL2Unv83EUnp2/d9VmWbVn7/stOW9tTA44v2rrv3uKPTgmTJuq33BW3MenU"
    "qeVHRh1//dCaSNwBCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgCIIgyK/BmYrLWTtsQ8deiYmaUFfRlt/4F3ta+Hdb"
    "L4YPUL29bdl3j097OXlAdgJ5fum9D13s8UzW+bVZG5JCXIXHNkatmKiyPvkaPkEEQRAEQRAEQRAEQRAEQRAEQRAEQRAE+f9D"
    "BYdAdCQEsjvxIVpII7hOJXsQeJJKRyLYfA/IQvBw5v0hq8EHM78R8gXwIcxjII+BBzNPgDzDeRJkJ3h35rdBBqh1ZADz6ZDD"
    "wLXMLZAm8NuZl0BWgQcyXwT5APf6+yBfBB/O3AnZCv4s84chl/voyDbmT0IO1+hIMfPnIB/VXLvfFyCfA09lvhPyK3A/5i7I"
    "Ds4PQF7i/BB95r7X/BikP+cfQXbjvA0yhPNzkL05/wYyDFzD/ArkQG7eDz7HSHB/5kHgMZz3Ao/jPBx8DOdDwVM4N4JPAu+i"
    "fJ7gd3CeAj6TW58GbuHmp4JbOZ8FvoDzYvBK7vVl4Cu5+cXgazhfDv4Y57XgT3O+Hnwb53XgOzjfAv4a5y+CH+Cuvxf8Xc6b"
    "wI9y698BP8X5++BtnH8E/hXnZ8A7OT8PrvK75hfBAzhXq+Hz57wreF/OQ8EHcd4PPJrzweBxnA8HT+Q8HnwC5+PAMzifCD6D"
    "80zwfM7vBC/h3AI+n3MreAXnC8CrOa8EX8u5A/xxzh8Ef4bzJ8C3c/4s+CucPw/u4nwn+EHO94E3c/4W+AnO/w5+mvOT4B5w"
    "HfNPwC+BG5mfpc/bXyd9n6TeCT4aXMWc5NjsuWV2kppTkltshSgtt+dBFNxdbiuStciyUC6s5SVyYSsutFryWU2jrNhqz6Gr"
    "8nJtlpzZlkKplSQWK11YZrFZ6EWs82hZXmKRz8lFXm6pvbyMVgXF1mLpsvnFhRYbfUFekSVvrk26cN5cuiK3/G56vthWlhPD"
    "Us/SwNLI0sTSzDKWZRzLeJYjlD5XGyod9UpLvdJTrzTVK131Slu90levNNYrnQ1KZ8PVe1U6G5TOBqWzQelsUDoblM4GpbNB"
    "6WxUOhuVzkaloVFpaFQaGpWGRqWhUWloVBqalIYmpaFJuVXT1QerdDYpnU1KZ5PS2aQ0NCsNzUpDs9LQrDQ0X/2olIZmpaFZ"
    "aWhWbtWsdI5VOscqnWOVzrFS57J76Ipym6XMaGAF7DrYa3R3FubaLTmw9wthY5Lou+ctyM+155Jo6zy7Jbp0fhGJtlsW2km0"
    "fNa2qMSeOxvSXiZnEat+ye8vStLDh0oiHDp2MJQygP68hUOtnBUICeX6aViGsn5+7PcjAdb19/9pvz78dWkz+gtP40/XCVev"
    "yThPSKmv3J++XsvWDrnaS6a0A9b4/PT9xvxo3fxOQkb+i+fyT2Nj1CI="))


def check(workdir: Path) -> str | None:
    """None if the translation behaves as the original; else what differs."""
    from pvtranslate.fuzz import check_reproducer
    return check_reproducer(GUEST_ELF, PROGRAM_SITES, Path(workdir))


PROGRAM_SITES = {"0x100025": "lgdt", "0x100038": "mov.to.ds", "0x10003a": "mov.to.es", "0x10003c": "mov.to.fs", "0x10003e": "mov.to.gs", "0x100040": "mov.to.ss", "0x10004c": "lidt", "0x10004f": "mov.from.cr0", "0x100059": "mov.from.cr4", "0x100065": "out8.imm8", "0x100069": "out8.imm8", "0x10006d": "out8.imm8", "0x100071": "out8.imm8", "0x100075": "out8.imm8", "0x100079": "out8.imm8", "0x10007d": "out8.imm8", "0x100081": "out8.imm8", "0x100085": "out8.imm8", "0x100089": "out8.imm8", "0x100090": "ltr", "0x100098": "lldt", "0x1000a7": "wrmsr", "0x100106": "out8.imm8", "0x100108": "pop.ds", "0x100110": "pushfd", "0x10013f": "out8.imm8", "0x100181": "rep.outsb", "0x100234": "mov.from.ds", "0x100241": "mov.to.ds", "0x100243": "mov.from.es", "0x100250": "mov.to.es", "0x100252": "mov.from.fs", "0x10025f": "mov.to.fs", "0x100261": "mov.from.gs", "0x10026e": "mov.to.gs", "0x100270": "mov.from.ss", "0x10027d": "mov.to.ss", "0x100281": "popfd", "0x1002ad": "out8.imm8", "0x1002b1": "mov.from.cs", "0x1002b7": "mov.from.ss", "0x1002bd": "mov.from.ds", "0x1002c3": "mov.from.es", "0x1002c9": "mov.from.fs", "0x1002cf": "mov.from.gs", "0x1002e0": "mov.from.ds", "0x1002ed": "mov.to.ds", "0x1002ef": "mov.from.es", "0x1002fc": "mov.to.es", "0x1004b8": "mov.from.cs", "0x1004bd": "mov.from.ss", "0x1004c3": "mov.from.ds", "0x1004c9": "mov.from.es", "0x1004cf": "mov.from.fs", "0x1004d5": "mov.from.gs", "0x1006ef": "out8.imm8", "0x1006fa": "iretd", "0x100702": "pushfd", "0x100707": "mov.from.cs", "0x10070c": "mov.from.ss", "0x100712": "mov.from.ds", "0x100718": "mov.from.es", "0x10071e": "mov.from.fs", "0x100724": "mov.from.gs"}   # every sensitive instruction the generator placed: va -> catalog entry


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        problem = check(Path(tmp))
    print(problem or "equivalent: the translation now behaves as the original")
    sys.exit(1 if problem else 0)
