"""The report's inline stylesheet and script: small, no fonts, no network, plain JS."""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root{--bg:#f6f7f9;--fg:#1d2330;--mute:#667085;--line:#d9dee7;--card:#fff;
--chg:#b54708;--add:#067647;--del:#b42318;--same:#667085}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header.top{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
padding:8px 16px;display:flex;flex-wrap:wrap;gap:8px 20px;align-items:center}
header.top h1{font-size:16px;margin:0}
main{padding:12px 16px 40px}
.filters label{margin-right:10px;white-space:nowrap;cursor:pointer}
.filters select{font:inherit}
nav.pages a,nav.pages b{margin-right:6px}
table.summary{border-collapse:collapse;margin:8px 0 16px;background:#fff}
table.summary th,table.summary td{border:1px solid var(--line);padding:3px 8px;text-align:right}
table.summary th:first-child,table.summary td:first-child{text-align:left}
h2{font-size:18px;margin:22px 0 4px}
h3{font-size:15px;margin:16px 0 6px}
h3 small,h2 small{color:var(--mute);font-weight:normal}
.note{color:var(--mute);margin:4px 0}
.sheet{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:6px;
margin:0;width:min(276px,100%)}
.card figcaption{font-size:12px;word-break:break-all;margin-top:4px}
.media{display:flex;flex-wrap:wrap;gap:4px;justify-content:center;min-height:40px}
.media img,.media video{display:block;max-width:256px;max-height:256px;width:auto;height:auto;
background:#e8ebf0;border-radius:3px}
.ph{display:flex;align-items:center;justify-content:center;text-align:center;width:256px;
max-width:100%;min-height:96px;padding:8px;background:repeating-linear-gradient(
45deg,#eef0f4,#eef0f4 8px,#e4e7ed 8px,#e4e7ed 16px);color:var(--mute);font-size:12px;
border-radius:3px}
.preview-tag{flex-basis:100%;font-size:11px;font-weight:600;color:#7a2e0e;
background:#fef0c7;border:1px dashed #dc6803;border-radius:3px;padding:2px 6px}
.st{display:inline-block;font-size:11px;font-weight:600;text-transform:uppercase;
padding:0 5px;border-radius:3px;color:#fff;background:var(--same)}
.st-changed{background:var(--chg)}.st-added{background:var(--add)}
.st-removed{background:var(--del)}
details{font-size:12px;margin-top:4px;position:relative}
details summary{cursor:pointer;color:var(--mute)}
details[open] summary{color:var(--fg)}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 8px;margin:4px 0;
position:absolute;z-index:3;left:0;top:100%;width:min(420px,92vw);max-height:60vh;
overflow:auto;background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px;
box-shadow:0 6px 24px rgba(16,24,40,.18)}
.after dl.kv,td:last-child dl.kv{left:auto;right:0}
dl.kv dt{color:var(--mute)}dl.kv dd{margin:0;overflow-wrap:anywhere;white-space:pre-wrap}
.gridwrap{max-width:100%;overflow-x:auto;margin:6px 0 14px;padding-bottom:2px;
scrollbar-color:#aab2bf #e8ebf0}
.gridwrap::-webkit-scrollbar{height:12px}
.gridwrap::-webkit-scrollbar-track{background:#e8ebf0;border-radius:6px}
.gridwrap::-webkit-scrollbar-thumb{background:#aab2bf;border-radius:6px}
.gridwrap dl.kv{position:static;width:auto;max-height:none;box-shadow:none}
.scroll-hint{margin:6px 0 -2px;font-size:12px;color:var(--mute)}
table.grid{border-collapse:collapse;margin:0;
--cell:clamp(128px,calc((100vw - 150px) / var(--cols,1) - 14px),256px)}
table.grid .media img,table.grid .media video{max-width:var(--cell);max-height:var(--cell)}
table.grid .ph{width:var(--cell)}
table.grid caption{text-align:left;font-weight:600;padding:2px 0}
table.grid th{background:#eef1f5;border:1px solid var(--line);padding:4px 8px;font-size:12px}
table.grid td{border:1px solid var(--line);padding:4px;vertical-align:top}
table.grid td .card{border:0;padding:0;width:auto}
td.empty{color:var(--mute);font-size:12px;text-align:center}
.pairs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.pair{background:#fff;border:1px solid var(--line);border-left:4px solid var(--same);
border-radius:6px;padding:8px;display:grid;grid-template-columns:1fr 1fr;gap:6px 10px;
width:min(440px,100%)}
.pair .media img,.pair .media video{max-width:196px;max-height:196px}
.pair .ph{width:196px}
.pair .what{overflow-wrap:anywhere}
.pair[data-status=changed]{border-left-color:var(--chg)}
.pair[data-status=added]{border-left-color:var(--add)}
.pair[data-status=removed]{border-left-color:var(--del)}
.pair .what{grid-column:1/-1}
.pair h4{margin:0 0 4px;font-size:12px;color:var(--mute);font-weight:600}
ul.fields{margin:4px 0 0;padding-left:18px;font-size:13px}
ul.fields code{background:#f1f3f6;padding:0 3px;border-radius:3px}
del{color:var(--del);background:#fee4e2}ins{color:var(--add);background:#dcfae6;
text-decoration:none}
[hidden]{display:none!important}
"""

# Filters: every element with data-status is shown when its status box is ticked and
# its decision matches the select (if any); grids keep their cells, only cards hide.
# A grid wider than the window says so above it (its box scrolls sideways).
JS = """
(function(){
var boxes=document.querySelectorAll('input[data-filter]');
var pick=document.querySelector('select[data-decision]');
function apply(){
 var on={};boxes.forEach(function(b){on[b.value]=b.checked;});
 var want=pick?pick.value:'';
 document.querySelectorAll('[data-status]').forEach(function(el){
  var ok=on[el.dataset.status]!==false&&(!want||el.dataset.decision===want);
  el.hidden=!ok;});
}
boxes.forEach(function(b){b.addEventListener('change',apply);});
if(pick){pick.addEventListener('change',apply);}
function hints(){
 document.querySelectorAll('.gridwrap').forEach(function(w){
  var hint=w.previousElementSibling;
  if(hint&&hint.classList.contains('scroll-hint')){hint.hidden=w.scrollWidth<=w.clientWidth;}
 });
}
hints();window.addEventListener('resize',hints);window.addEventListener('load',hints);
})();
"""
