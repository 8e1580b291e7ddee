namespace Maac.Tensors

open System
open System.Collections.Generic

/// Memory behind a tensor and its reshaped views that a release scope can give back (for backend authors).
[<AllowNullLiteral>]
type IReleasableBlock =
    /// Set while a release scope is asked to keep the block beyond its end.
    abstract Kept: bool with get, set
    /// Gives the memory back now; the tensors using it must refuse to be used from then on.
    abstract Release: unit -> unit

/// Block lists for release scopes, reused on each thread: a step's scope records hundreds of blocks, and a new list
/// per scope would grow afresh (and be garbage) every step.
[<Sealed; AbstractClass>]
type internal BlockLists<'Block> =
    [<ThreadStatic; DefaultValue>]
    static val mutable private spare: Stack<List<'Block>>

    /// An empty list, reused when this thread has one.
    static member Take() =
        let spare = BlockLists<'Block>.spare

        if isNull spare || spare.Count = 0 then
            List<'Block>()
        else
            spare.Pop()

    /// Takes back a list nobody uses any more (emptied here).
    static member Give(list: List<'Block>) =
        list.Clear()

        if isNull BlockLists<'Block>.spare then
            BlockLists<'Block>.spare <- Stack()

        BlockLists<'Block>.spare.Push list

/// One thread's release scope on one backend (for backend authors implementing IReleasingBackend): the blocks
/// recorded while it is the innermost scope are released when it ends, except kept ones, which pass to the scope
/// around it (or, at the outermost, back to the garbage collector's care). Blocks made before it and handed to it
/// (Consume) are released too unless kept; a kept one stays with whoever had it. A block may be released more
/// than once (a consumed block also recorded by an outer scope): IReleasableBlock.Release must then do nothing.
[<Sealed; AllowNullLiteral>]
type ReleaseScope<'Block when 'Block :> IReleasableBlock>(owner: obj, parent: ReleaseScope<'Block>, restore: ReleaseScope<'Block> -> unit) =
    let made = BlockLists<'Block>.Take()
    let consumed = BlockLists<'Block>.Take()
    let mutable ended = false
    /// The backend the scope belongs to.
    member _.Owner = owner
    /// Records a block made while this scope is the innermost.
    member _.Add(block: 'Block) = made.Add block
    /// Records a block made before this scope that its owner gives up (released at the end unless kept).
    member _.Consume(block: 'Block) = consumed.Add block

    /// Ends the scope (once; later calls do nothing): makes the parent the innermost scope again, releases the
    /// consumed blocks not kept, hands the kept blocks it made to the parent and releases the others.
    member _.End() =
        if not ended then
            ended <- true
            restore parent

            for block in consumed do
                if not block.Kept then
                    block.Release()

            for block in made do
                if block.Kept then
                    block.Kept <- false

                    if not (isNull parent) then
                        parent.Add block
                else
                    block.Release()

            for block in consumed do
                block.Kept <- false

            BlockLists<'Block>.Give made
            BlockLists<'Block>.Give consumed

    /// Opens a scope inside `parent` (this thread's innermost on the backend `owner`, or null) and makes it the
    /// innermost through `setCurrent`. The IReleaseScope returned keeps (or consumes) a tensor by marking (or
    /// recording) the block `blockOf` finds for it (null for a tensor of another backend, which is left alone).
    static member Begin(owner: obj, parent: ReleaseScope<'Block>, setCurrent: ReleaseScope<'Block> -> unit, blockOf: RawTensor -> 'Block) =
        let scope = ReleaseScope<'Block>(owner, parent, setCurrent)
        setCurrent scope

        { new IReleaseScope with
            member _.Keep t =
                let block = blockOf t

                if not (isNull (box block)) then
                    block.Kept <- true

            member _.Consume t =
                let block = blockOf t

                if not (isNull (box block)) then
                    scope.Consume block

            member _.Dispose() = scope.End()
        }
